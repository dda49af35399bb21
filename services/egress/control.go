package egress

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/smpplink"
)

// pauseGate holds a link's workers while an operator has paused it. A paused
// link fetches nothing, so its pool's other links take its messages.
type pauseGate struct {
	mu      sync.Mutex
	paused  bool
	running chan struct{} // closed while not paused
}

func newPauseGate() *pauseGate {
	ch := make(chan struct{})
	close(ch)
	return &pauseGate{running: ch}
}

func (g *pauseGate) set(paused bool) (changed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused == paused {
		return false
	}
	g.paused = paused
	if paused {
		g.running = make(chan struct{})
	} else {
		close(g.running)
	}
	return true
}

func (g *pauseGate) isPaused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}

// wait returns when the link is not paused, or ctx is done.
func (g *pauseGate) wait(ctx context.Context) error {
	g.mu.Lock()
	ch := g.running
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watchControl keeps gate in step with the link's control in sms_links
// until ctx ends; it retries the watch if NATS drops it.
func (s *Stage) watchControl(ctx context.Context, lo LinkOptions, gate *pauseGate, log *slog.Logger) {
	for ctx.Err() == nil {
		err := linkstate.WatchControl(ctx, s.linksKV, lo.Name, func(c linkstate.Control) {
			if gate.set(c.Paused) {
				s.m.paused.WithLabelValues(lo.Name).Set(b2f(c.Paused))
				log.Info("link control changed", "paused", c.Paused, "reason", c.Reason)
			}
		}, func(err error) { log.Warn("ignoring malformed link control", "err", err) })
		if err != nil && ctx.Err() == nil {
			log.Warn("watching link control failed, retrying", "err", err)
		}
		sleep(ctx, time.Second)
	}
}

// instanceName names this process in health reports: host and pid.
func instanceName() string {
	h, _ := os.Hostname()
	return h + ":" + strconv.Itoa(os.Getpid())
}

// health is the link's state now, as this instance sees it.
func (s *Stage) health(lo LinkOptions, link *smpplink.Link, p *pace, gate *pauseGate) linkstate.Health {
	h := linkstate.Health{Link: lo.Name, Pool: lo.Pool, Instance: s.instance, Bound: link.Bound(), Paused: gate.isPaused(),
		ConfiguredRate: float64(lo.Rate), EffectiveRate: p.rate(), Throttles: p.throttles.Load()}
	if err := link.LastError(); err != nil {
		h.LastError = err.Error()
	}
	h.Binds, h.BindsWanted = link.Binds()
	return h
}

// reportHealth writes the link's health to sms_links when it changes (checked
// every second) and at least every 30 s, until ctx ends.
func (s *Stage) reportHealth(ctx context.Context, lo LinkOptions, link *smpplink.Link, p *pace, gate *pauseGate, log *slog.Logger) {
	const every, beat = time.Second, 30 * time.Second
	var last linkstate.Health
	var lastAt time.Time
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		h := s.health(lo, link, p, gate)
		s.m.bound.WithLabelValues(lo.Name).Set(b2f(h.Bound))
		s.m.rate.WithLabelValues(lo.Name).Set(h.EffectiveRate)
		if h != last || time.Since(lastAt) >= beat {
			last = h
			h.UpdatedAt = time.Now().UTC()
			if err := linkstate.PutHealth(ctx, s.linksKV, h); err != nil && ctx.Err() == nil {
				log.Debug("could not report link health", "err", err)
			} else {
				lastAt = time.Now()
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
