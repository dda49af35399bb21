package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/pacing"
	"github.com/smsflow/smsflow/streams"
)

// Link is a configured link, as the dashboard knows it from the config.
type Link struct {
	Name  string
	Pool  string
	Rate  float64 // configured submits per second
	Burst int
	Price float64 // per submitted part
}

// LinkState is a link as KV sms_links and sms_pacing report it, for every
// instance sending on it.
type LinkState struct {
	Link           string  `json:"link"`
	Pool           string  `json:"pool"`
	State          string  `json:"state"` // bound, down (reported, not bound), paused, unknown (no fresh report)
	Bound          bool    `json:"bound"`
	Paused         bool    `json:"paused"`
	ConfiguredRate float64 `json:"configured_rate"`
	EffectiveRate  float64 `json:"effective_rate"` // lowered after throttles; 0 when not bound
	Throttles      int64   `json:"throttles"`      // reported by the instances, since each started
	Tokens         float64 `json:"tokens"`         // submits the pacing bucket would allow right now
	Instances      int     `json:"instances"`      // egress instances with a fresh report
	LastError      string  `json:"last_error,omitempty"`
}

// LinkStates reads the state of the configured links from KV, on demand,
// reusing an answer for up to a second (see Queues).
type LinkStates struct {
	js     jetstream.JetStream
	links  []Link
	now    func() time.Time
	maxAge time.Duration

	mu  sync.Mutex
	at  time.Time
	out []LinkState
	err error

	errors prometheus.Counter
}

// NewLinkStates reads the state of links; its metrics go on reg.
func NewLinkStates(js jetstream.JetStream, links []Link, reg prometheus.Registerer) *LinkStates {
	l := &LinkStates{js: js, links: links, now: time.Now, maxAge: time.Second,
		errors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "link", Name: "state_read_errors_total",
			Help: "Failed reads of KV sms_links or sms_pacing (the link gauges of that scrape are left out)."})}
	reg.MustRegister(l) // its Collect sends errors, after the read that may count one
	return l
}

// Read returns every configured link's state, in config order.
func (l *LinkStates) Read(ctx context.Context) ([]LinkState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.at.IsZero() && now.Sub(l.at) < l.maxAge {
		return l.out, l.err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := l.read(ctx, now)
	l.at, l.out, l.err = now, out, err
	if err != nil {
		l.errors.Inc()
	}
	return out, err
}

func (l *LinkStates) read(ctx context.Context, now time.Time) ([]LinkState, error) {
	kv, err := l.js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		return nil, err
	}
	views, err := linkstate.List(ctx, kv, now)
	if err != nil {
		return nil, err
	}
	byName := map[string]linkstate.View{}
	for _, v := range views {
		byName[v.Link] = v
	}
	pace, perr := l.js.KeyValue(ctx, streams.BucketPacing)
	var errs []error
	if perr != nil {
		errs = append(errs, perr)
	}
	out := make([]LinkState, 0, len(l.links))
	for _, c := range l.links {
		v, reported := byName[c.Name]
		s := LinkState{Link: c.Name, Pool: c.Pool, ConfiguredRate: c.Rate, Bound: v.Bound, Paused: v.Paused,
			EffectiveRate: v.EffectiveRate, Throttles: v.Throttles, Instances: len(v.Instances), LastError: v.LastError}
		switch {
		case s.Paused:
			s.State = "paused"
		case s.Bound:
			s.State = "bound"
		case reported && len(v.Instances) > 0:
			s.State = "down"
		default:
			s.State = "unknown"
		}
		s.Tokens = float64(max(c.Burst, 1)) // an untouched bucket is full
		if pace != nil {
			e, err := pace.Get(ctx, pacing.Key(c.Name))
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				errs = append(errs, err)
			default:
				var st pacing.State
				if json.Unmarshal(e.Value(), &st) == nil {
					s.Tokens = Tokens(st, now, c.Rate, c.Burst)
				}
			}
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

// Tokens is how many submits a GCRA bucket in state st allows at now, at
// rate and burst (see pacing.Reserve): the frontier TAT-(burst-1)·T is the
// earliest next slot, and each T of time since it is one more token, up to
// burst. now is the local clock; the bucket runs on the server's clock, so
// the figure is off by their difference (milliseconds on one host).
func Tokens(st pacing.State, now time.Time, rate float64, burst int) float64 {
	burst = max(burst, 1)
	t := float64(pacing.Interval(rate))
	free := (float64(now.UnixNano()-st.TAT) + float64(burst)*t) / t
	return min(max(free, 0), float64(burst))
}

var (
	linkLabels             = []string{"link"}
	linkConfiguredRateDesc = prometheus.NewDesc("smsflow_link_configured_rate", "The link's configured submits per second (links.<name>.rate).", linkLabels, nil)
	linkEffectiveRateDesc  = prometheus.NewDesc("smsflow_link_effective_rate", "The link's submits per second after throttles lowered it, the lowest of its bound instances; 0 when no instance is bound.", linkLabels, nil)
	linkBoundDesc          = prometheus.NewDesc("smsflow_link_bound", "1 when at least one egress instance has the link bound (KV sms_links), else 0.", linkLabels, nil)
	linkPausedDesc         = prometheus.NewDesc("smsflow_link_paused", "1 while an operator has paused the link, else 0.", linkLabels, nil)
	linkThrottlesDesc      = prometheus.NewDesc("smsflow_link_reported_throttles", "ESME_RTHROTTLED answers reported by the link's egress instances (each since it started; a restart lowers it).", linkLabels, nil)
	linkTokensDesc         = prometheus.NewDesc("smsflow_link_tokens", "Submits the link's pacing bucket (KV sms_pacing) would allow right now, up to its burst.", linkLabels, nil)
	linkInstancesDesc      = prometheus.NewDesc("smsflow_link_instances", "Egress instances with a fresh health report on the link.", linkLabels, nil)
)

// Describe implements prometheus.Collector.
func (l *LinkStates) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{linkConfiguredRateDesc, linkEffectiveRateDesc, linkBoundDesc, linkPausedDesc,
		linkThrottlesDesc, linkTokensDesc, linkInstancesDesc} {
		ch <- d
	}
	l.errors.Describe(ch)
}

// Collect implements prometheus.Collector. Links are the configured ones
// only, so the label values are a closed set.
func (l *LinkStates) Collect(ch chan<- prometheus.Metric) {
	states, _ := l.Read(context.Background())
	l.errors.Collect(ch)
	for _, s := range states {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Link)
		}
		g(linkConfiguredRateDesc, s.ConfiguredRate)
		g(linkEffectiveRateDesc, s.EffectiveRate)
		g(linkBoundDesc, b2f(s.Bound))
		g(linkPausedDesc, b2f(s.Paused))
		g(linkThrottlesDesc, float64(s.Throttles))
		g(linkTokensDesc, s.Tokens)
		g(linkInstancesDesc, float64(s.Instances))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
