// Package receipts is the receipts stage: it reads the raw receipts that
// egress stored in SMS_DLR (durable consumer "receipts"), finds the message
// each belongs to in KV sms_dlr_index, and publishes its final status:
// delivered, undelivered or expired.
//
// A receipt can overtake its index entry (the SMSC answers faster than egress
// writes the mapping): it is retried with backoff until the entry appears, or
// until OrphanAfter has passed since it was received; then it is an orphan,
// terminated and counted.
package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Options configure the stage.
type Options struct {
	OrphanAfter time.Duration // give up on a receipt with no index entry after this; 10m when 0
	BackoffMin  time.Duration
	BackoffMax  time.Duration
	Grace       time.Duration
}

// Stage is the receipts stage.
type Stage struct {
	js    jetstream.JetStream
	pub   *status.Publisher
	index jetstream.KeyValue
	opts  Options
	log   *slog.Logger
	m     *Metrics
	now   func() time.Time
}

// New makes the stage.
func New(js jetstream.JetStream, pub *status.Publisher, opts Options, log *slog.Logger, m *Metrics) *Stage {
	if opts.OrphanAfter <= 0 {
		opts.OrphanAfter = 10 * time.Minute
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 100 * time.Millisecond
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = 10 * time.Second
	}
	return &Stage{js: js, pub: pub, opts: opts, log: log, m: m, now: time.Now}
}

// Run consumes until ctx is done, then finishes the receipts in hand. It
// returns nil when ctx ends, even before it got to consume.
func (s *Stage) Run(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, streams.BucketDLRIndex)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("receipts: kv %s: %w", streams.BucketDLRIndex, err)
	}
	s.index = kv
	cons, err := s.js.Consumer(ctx, streams.DLR, streams.ConsumerReceipts)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("receipts: consumer: %w", err)
	}
	s.log.Info("receipts stage started")
	defer s.log.Info("receipts stage stopped")
	return consume.Run(ctx, cons, s.handle, consume.Options{Grace: s.opts.Grace, Log: s.log})
}

// indexEntry is the value egress writes under each SMSC id.
type indexEntry struct {
	ID    string `json:"id"`
	Parts int    `json:"parts"`
}

func (s *Stage) handle(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	md, err := msg.Metadata()
	if err != nil {
		return consume.Term("no metadata: " + err.Error())
	}
	var rec dlr.Record
	if err := json.Unmarshal(msg.Data(), &rec); err != nil {
		s.m.results.WithLabelValues("invalid").Inc()
		s.log.Warn("receipt record is not valid JSON, skipped", "seq", md.Sequence.Stream, "err", err)
		return consume.Term("invalid receipt record")
	}
	r, err := dlr.Parse(rec)
	if err != nil {
		s.m.results.WithLabelValues("invalid").Inc()
		s.log.Warn("not a delivery receipt, skipped", "seq", md.Sequence.Stream, "link", rec.Link, "err", err)
		return consume.Term("not a receipt")
	}
	key := dlr.Key(rec.Link, dlr.NormalizeID(r.ID))
	kve, err := s.index.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if s.now().Sub(md.Timestamp) > s.opts.OrphanAfter {
			s.m.results.WithLabelValues("orphan").Inc()
			s.log.Warn("receipt matches no submitted message: orphan", "link", rec.Link, "smsc_id", r.ID, "stat", r.Stat)
			return consume.Term("orphan")
		}
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	if err != nil {
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	var e indexEntry
	if err := json.Unmarshal(kve.Value(), &e); err != nil || e.ID == "" {
		s.m.results.WithLabelValues("invalid").Inc()
		s.log.Error("sms_dlr_index entry unreadable", "key", key, "err", err)
		return consume.Term("bad index entry")
	}
	if !r.State.Final() {
		s.m.results.WithLabelValues("intermediate").Inc()
		return consume.Ack()
	}
	ev := status.Event{ID: e.ID, Stage: "receipts", Link: rec.Link, SMSCID: r.ID, Parts: e.Parts, Detail: "stat:" + r.Stat}
	ev.Code = errCode(r.Err)
	switch r.State {
	case dlr.Delivered:
		ev.Status = status.Delivered
	case dlr.Expired:
		ev.Status = status.Expired
	default: // undelivered, rejected
		ev.Status = status.Undelivered
	}
	err = s.pub.Publish(ctx, ev)
	switch {
	case errors.Is(err, status.ErrAlreadyFinal):
		s.m.results.WithLabelValues("duplicate").Inc()
		return consume.Ack()
	case err != nil:
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.results.WithLabelValues(ev.Status).Inc()
	return consume.Ack()
}

// errCode reads a receipt's err field as a number: decimal ("000", "011" is
// 11, leading zeros are padding, not octal) or hex with 0x ("0x0B"); 0 when
// it has none or it is not a number.
func errCode(s string) int {
	base := 10
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s, base = s[2:], 16
	}
	n, err := strconv.ParseUint(s, base, 31)
	if err != nil {
		return 0
	}
	return int(n)
}

// Metrics of the receipts stage.
type Metrics struct {
	results *prometheus.CounterVec
}

// NewMetrics registers the stage's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{results: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Namespace: "smsflow", Subsystem: "receipts", Name: "processed_total",
		Help: "Receipts processed, by result: delivered, undelivered, expired, intermediate, duplicate (message already final), orphan (no such submit), invalid.",
	}, []string{"result"})}
	for _, r := range []string{"delivered", "undelivered", "expired", "intermediate", "duplicate", "orphan", "invalid"} {
		m.results.WithLabelValues(r)
	}
	return m
}
