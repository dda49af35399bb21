package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Observer follows SMS_STATUS and derives what no single stage can see: the
// latency from accepted to submitted and from submitted to delivered (the
// events are written by different stages, maybe in different processes),
// counts by status for the whole cluster, the message rates and the cost of
// what was submitted.
//
// It reads with an ordered consumer starting at the Observer's creation time,
// not with a durable one: what it feeds (counters, histograms, rates) lives in
// this process's memory and starts at zero with it, so a position kept on the
// server for a restart would be of no use; a durable shared by several
// instances would split the events between them, when each must see all; and
// an ordered consumer needs no acks and no cleanup (the server drops it when
// the process goes). Starting at the creation time rather than "new" means
// no event is missed between New and the consumer's creation in Run.
type Observer struct {
	js     jetstream.JetStream
	log    *slog.Logger
	now    func() time.Time
	start  time.Time
	prices map[string]float64
	m      *observerMetrics

	mu      sync.Mutex
	track   *tracker
	window  *window
	counts  map[string]int64
	parts   map[string]int64 // submitted parts by link
	cost    map[string]float64
	toSub   *samples        // accepted→submitted, seconds
	toDeliv *samples        // submitted→delivered, seconds
	codes   map[string]bool // command_status label values in use
}

// ObserverOptions tune an Observer; zero values are right for production.
type ObserverOptions struct {
	Prices   map[string]float64 // price of one submitted part, by link
	MaxTrack int                // messages whose first-seen times are kept; 100,000 when 0
	Samples  int                // latency samples kept for avg and p99; 10,000 when 0
	Now      func() time.Time   // time.Now when nil
}

// closed sets: the statuses and history entries counted, each a label value.
var eventKinds = []string{
	status.Accepted, status.Scheduled, status.Released, status.Queued, status.Submitted, status.Delivered,
	status.Undelivered, status.Expired, status.Failed, status.Rejected,
	status.Retry, status.Throttled, status.SubmitUnknown,
}

type observerMetrics struct {
	events    *prometheus.CounterVec
	toSub     prometheus.Histogram
	toDeliv   prometheus.Histogram
	parts     *prometheus.CounterVec
	cost      *prometheus.CounterVec
	submits   *prometheus.CounterVec
	tracked   prometheus.Gauge
	evicted   prometheus.Counter
	undecoded prometheus.Counter
}

// latencyBuckets span 10 ms to about 45 min: a submit waits from
// milliseconds (idle link) to many minutes (a campaign's backlog); a receipt
// comes in seconds, or hours from a phone that is off.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

func newObserverMetrics(reg prometheus.Registerer, links []string) *observerMetrics {
	f := promauto.With(reg)
	const ns, sub = "smsflow", "status"
	m := &observerMetrics{
		events: f.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_total",
			Help: "Status events seen on SMS_STATUS (from every instance), by status; retry, throttled and submit_unknown are attempts."}, []string{"status"}),
		toSub: f.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "accepted_to_submitted_seconds",
			Help: "Time from a message's accepted event to its submitted event (queueing, pacing and the submit).", Buckets: latencyBuckets}),
		toDeliv: f.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "submitted_to_delivered_seconds",
			Help: "Time from a message's submitted event to its delivered event (the SMSC and the handset).", Buckets: latencyBuckets}),
		parts: f.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "submitted_parts_total",
			Help: "Message parts in submitted events, by link (a long message is several parts, each billed)."}, []string{"link"}),
		cost: f.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cost_total",
			Help: "Cost of submitted parts at the link's configured price (links.<name>.price), by link."}, []string{"link"}),
		submits: f.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "submit_results_total",
			Help: "submit_sm outcomes in status events (submitted, throttled, retry, submit_unknown, failed permanent), by link and SMPP command_status: 0x00000000 accepted, none when the SMSC never answered, other past " + fmt.Sprint(maxCodes) + " distinct codes."}, []string{"link", "command_status"}),
		tracked: f.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "tracked_messages",
			Help: "Messages whose first-seen times the observer holds (until their terminal event) for the latency histograms."}),
		evicted: f.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "tracking_evicted_total",
			Help: "Messages dropped from latency tracking before their terminal event, because the tracking table was full."}),
		undecoded: f.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "undecodable_events_total",
			Help: "Messages on sms.status.> that are not a status event (ignored)."}),
	}
	for _, k := range eventKinds {
		m.events.WithLabelValues(k)
	}
	for _, l := range append(slices.Clone(links), otherLink) {
		m.parts.WithLabelValues(l)
		m.cost.WithLabelValues(l)
		for _, c := range []string{codeLabel(0x00), codeLabel(0x58), codeNone} {
			m.submits.WithLabelValues(l, c)
		}
	}
	return m
}

// otherLink is the label for a link that is not in the config (an event from
// an instance with another config): labels stay a closed set.
const otherLink = "other"

// NewObserver makes an Observer of the events from now on, with its metrics
// on reg. links are the configured link names (the label values).
func NewObserver(js jetstream.JetStream, links []string, opts ObserverOptions, log *slog.Logger, reg prometheus.Registerer) *Observer {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxTrack <= 0 {
		opts.MaxTrack = 100_000
	}
	if opts.Samples <= 0 {
		opts.Samples = 10_000
	}
	prices := map[string]float64{}
	for _, l := range links {
		prices[l] = opts.Prices[l]
	}
	return &Observer{
		js: js, log: log, now: opts.Now, start: opts.Now(), prices: prices,
		m:     newObserverMetrics(reg, links),
		track: newTracker(opts.MaxTrack), window: newWindow(),
		counts: map[string]int64{}, parts: map[string]int64{}, cost: map[string]float64{},
		toSub: newSamples(opts.Samples), toDeliv: newSamples(opts.Samples),
		codes: map[string]bool{codeLabel(0): true, codeLabel(0x58): true, codeNone: true},
	}
}

// Run reads SMS_STATUS until ctx ends, and returns nil then. A broken
// consumer (NATS down for longer than the client reconnects) is made again
// from the next sequence, after a pause: the observer never stops the process.
func (o *Observer) Run(ctx context.Context) error {
	var next uint64 // 0: start at o.start
	for {
		err := o.consume(ctx, &next)
		if ctx.Err() != nil {
			return nil
		}
		o.log.Warn("status observer: consumer failed; starting again", "next_seq", next, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (o *Observer) consume(ctx context.Context, next *uint64) error {
	st, err := o.js.Stream(ctx, streams.Status)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{"sms.status.>"}}
	if *next > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, *next
	} else {
		start := o.start
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	c, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	it, err := c.Messages()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return err
		}
		if md, err := msg.Metadata(); err == nil {
			*next = md.Sequence.Stream + 1
		}
		ev, err := status.DecodeEvent(msg.Data())
		if err != nil || ev.ID == "" || ev.Status == "" {
			o.m.undecoded.Inc()
			continue
		}
		o.observe(ev)
	}
}

// observe counts one event; it is the whole logic of the Observer, and its
// unit tests call it directly.
func (o *Observer) observe(ev status.Event) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	kind := ev.Status
	if !slices.Contains(eventKinds, kind) {
		o.m.undecoded.Inc()
		return
	}
	o.m.events.WithLabelValues(kind).Inc()
	o.counts[kind]++
	o.window.add(now, kind, 1)

	switch kind {
	case status.Throttled, status.Retry, status.SubmitUnknown, status.Failed:
		// A submit the SMSC refused or never answered (code 0); a failure
		// for another reason (max_attempts) or a give-back is no submit.
		if (kind != status.Failed || ev.Reason == status.ReasonPermanent) && !status.IsGiveBack(ev) {
			c := codeNone
			if ev.Code != 0 {
				c = codeLabel(ev.Code)
			}
			o.submitResult(ev.Link, c)
		}
	case status.Submitted:
		o.submitResult(ev.Link, codeLabel(0))
	}

	switch {
	case kind == status.Accepted:
		o.track.accepted(ev.ID, ev.At)
	case kind == status.Released:
		o.track.released(ev.ID, ev.At)
	case kind == status.Submitted:
		if at, ok := o.track.submitted(ev.ID, ev.At); ok {
			d := ev.At.Sub(at).Seconds()
			o.m.toSub.Observe(max(d, 0))
			o.toSub.add(max(d, 0))
		}
		link := ev.Link
		if _, ok := o.prices[link]; !ok {
			link = otherLink
		}
		parts := max(ev.Parts, 1)
		cost := float64(parts) * o.prices[ev.Link]
		o.m.parts.WithLabelValues(link).Add(float64(parts))
		o.m.cost.WithLabelValues(link).Add(cost)
		o.parts[link] += int64(parts)
		o.cost[link] += cost
		o.window.add(now, partsKey(link), float64(parts))
	case status.Terminal(kind):
		if kind == status.Delivered {
			if at, ok := o.track.submittedAt(ev.ID); ok {
				d := ev.At.Sub(at).Seconds()
				o.m.toDeliv.Observe(max(d, 0))
				o.toDeliv.add(max(d, 0))
			}
		}
		o.track.remove(ev.ID)
	}
	if n := o.track.evicted; n > 0 {
		o.m.evicted.Add(float64(n))
		o.track.evicted = 0
	}
	o.m.tracked.Set(float64(o.track.len()))
}

func partsKey(link string) string { return "parts." + link }

// maxCodes bounds the command_status label values: an SMSC answering with
// ever new codes must not grow the series without end.
const maxCodes = 32

const (
	codeNone  = "none"  // no answer: timeout, not bound, connection lost
	codeOther = "other" // past maxCodes distinct codes
)

// codeLabel is an SMPP command_status as the SMPP spec writes it.
func codeLabel(code int) string { return fmt.Sprintf("0x%08x", uint32(code)) }

// submitResult counts one submit outcome; o.mu is held.
func (o *Observer) submitResult(link, c string) {
	if _, ok := o.prices[link]; !ok {
		link = otherLink
	}
	if !o.codes[c] {
		if len(o.codes) >= maxCodes {
			c = codeOther
		} else {
			o.codes[c] = true
		}
	}
	o.m.submits.WithLabelValues(link, c).Inc()
}

// Snapshot is what the Observer has seen, for the dashboard.
type Snapshot struct {
	Since   time.Time
	Counts  map[string]int64
	Parts   map[string]int64
	Cost    map[string]float64
	Rates   map[string]float64 // per second over the window, by status and "parts.<link>"
	ToSub   Latency
	ToDeliv Latency
	Tracked int
	Window  time.Duration
}

// Latency sums up the recent samples of one latency.
type Latency struct {
	Samples int     `json:"samples"`
	AvgMs   float64 `json:"avg_ms"`
	P99Ms   float64 `json:"p99_ms"`
}

// Snapshot returns a copy of the counts, the rates over the last rateWindow
// whole seconds, and avg and p99 of the recent latency samples.
func (o *Observer) Snapshot() Snapshot {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	s := Snapshot{
		Since: o.start, Counts: map[string]int64{}, Parts: map[string]int64{}, Cost: map[string]float64{},
		Rates: o.window.rates(now), ToSub: o.toSub.summary(), ToDeliv: o.toDeliv.summary(),
		Tracked: o.track.len(), Window: rateWindow * time.Second,
	}
	for _, k := range eventKinds {
		s.Counts[k] = o.counts[k]
	}
	for l := range o.prices {
		s.Parts[l], s.Cost[l] = o.parts[l], o.cost[l]
	}
	if o.parts[otherLink] > 0 {
		s.Parts[otherLink], s.Cost[otherLink] = o.parts[otherLink], o.cost[otherLink]
	}
	return s
}

// String is for logs and test failures.
func (l Latency) String() string {
	return fmt.Sprintf("%d samples, avg %.3f ms, p99 %.3f ms", l.Samples, l.AvgMs, l.P99Ms)
}
