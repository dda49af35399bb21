package egress

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// gate hands out submit slots at a rate: pacing.Limiter, whose state is in KV
// sms_pacing so that every instance sending on the link shares one rate.
type gate interface {
	Wait(ctx context.Context) error
	SetRate(rate float64)
}

// pace is a link's gate plus how fast it lets submits through: the configured
// rate, lowered when the SMSC throttles and raised again as submits succeed.
// Without it a link configured faster than its SMSC allows keeps overrunning
// it, and every overrun costs a message one of its attempts.
//
// On a throttle the rate that overran, less 15%, becomes the ceiling, and the
// rate drops to 70% of that (once per cutHold: the submits of one overrun all
// report it). Accepted submits bring the rate back to the ceiling within about
// a second. Above the ceiling it probes only after probeAfter without a
// throttle, 5% at a time, so a link that settled below its SMSC's limit is
// not throttled every few seconds, but finds the limit again if it was raised.
type pace struct {
	gate      gate
	max, min  float64
	throttles atomic.Int64 // every throttle seen, for sms_links

	mu        sync.Mutex
	cur       float64
	ceiling   float64
	lastCut   time.Time
	lastProbe time.Time
}

const (
	cutHold    = time.Second
	probeAfter = time.Minute
)

func newPace(g gate, perSecond int) *pace {
	max := float64(perSecond)
	return &pace{gate: g, max: max, min: min(max, 1), cur: max, ceiling: max}
}

// wait blocks until one submit (one SMPP part) may go out.
func (p *pace) wait(ctx context.Context) error { return p.gate.Wait(ctx) }

// throttled records an ESME_RTHROTTLED at now.
func (p *pace) throttled(now time.Time) {
	p.throttles.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lastCut.IsZero() && now.Sub(p.lastCut) < cutHold {
		return
	}
	p.lastCut, p.lastProbe = now, now
	p.ceiling = max(p.cur*0.85, p.min)
	p.set(max(p.ceiling*0.7, p.min))
}

// accepted records a submit the SMSC accepted at now.
func (p *pace) accepted(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.cur < p.ceiling:
		p.set(min(p.ceiling, p.cur+p.ceiling/p.cur))
	case p.ceiling < p.max && now.Sub(p.lastProbe) >= probeAfter:
		p.lastProbe = now
		p.ceiling = min(p.max, p.ceiling*1.05)
		p.set(p.ceiling)
	}
}

func (p *pace) set(r float64) {
	if r != p.cur {
		p.cur = r
		p.gate.SetRate(r)
	}
}

// rate is the current rate, in submits per second.
func (p *pace) rate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}
