// Package policy is the policy stage: it reads every envelope from
// SMS_OUTBOUND (durable consumer "policy"), validates and normalises it,
// runs the checks, and either publishes a `rejected` status or forwards the
// message to sms.egress.<pool> and publishes `queued`.
//
// Every step is idempotent, so a crash anywhere only repeats work: the
// forward carries Nats-Msg-Id = the message id, status events carry ids
// derived from (id, status), and a message that arrived without an id gets
// one derived from its stream sequence, the same on every redelivery.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/jspub"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Options configure the stage.
type Options struct {
	Region     string        // default region for numbers without a country prefix; "" for +E.164 only
	MaxChars   int           // text limit in characters
	BackoffMin time.Duration // retry delay when NATS could not take a write
	BackoffMax time.Duration
	Grace      time.Duration // shutdown grace for the message in hand
}

// Stage is the policy stage.
type Stage struct {
	js    jetstream.JetStream
	pub   *status.Publisher
	check atomic.Pointer[Check] // SetCheck swaps it while the stage runs (reload.go)
	opts  Options
	log   *slog.Logger
	m     *Metrics
	now   func() time.Time
}

// New makes the stage; check is usually Chain(..., routes).
func New(js jetstream.JetStream, pub *status.Publisher, check Check, opts Options, log *slog.Logger, m *Metrics) *Stage {
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 200 * time.Millisecond
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = 30 * time.Second
	}
	s := &Stage{js: js, pub: pub, opts: opts, log: log, m: m, now: time.Now}
	s.SetCheck(check)
	return s
}

// Run consumes until ctx is done, then finishes the messages in hand.
func (s *Stage) Run(ctx context.Context) error {
	cons, err := s.js.Consumer(ctx, streams.Outbound, streams.ConsumerPolicy)
	if err != nil {
		return fmt.Errorf("policy: consumer: %w", err)
	}
	s.log.Info("policy stage started")
	defer s.log.Info("policy stage stopped")
	// Each message is several synchronous JetStream round trips (accepted,
	// the duplicate window, the caps, the forward, queued) and no ordering is
	// owed between messages: many at once keeps policy ahead of the links,
	// and more writes share each socket write, server read and wake-up
	// (BenchmarkStage, medians of 6 interleaved runs, 256 handlers against
	// 64: 174 vs 176 cpu-µs/msg and 10,014 vs 9,380 msgs/s in one series,
	// 177 vs 189 cpu-µs/msg in another).
	return consume.Run(ctx, cons, s.handle, consume.Options{Batch: 256, Concurrency: 256, Grace: s.opts.Grace, Log: s.log})
}

func (s *Stage) handle(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	md, err := msg.Metadata()
	if err != nil {
		return consume.Term("no metadata: " + err.Error())
	}
	m, err := envelope.Decode(msg.Data())
	if err != nil {
		m = envelope.Message{ID: envelope.PeekID(msg.Data())}
	} else if m.ID != "" && !envelope.ValidID(m.ID) {
		err = &envelope.FieldError{Field: "id", Msg: fmt.Sprintf("%q is not a valid id (letters, digits, '-', '_', at most %d)", m.ID, envelope.MaxIDLen)}
		m.ID = ""
	}
	if m.ID == "" {
		// No usable id: derive one from the stream position, the same on
		// every redelivery, so the rejection or the message is not doubled.
		m.ID = envelope.IDFor(envelope.SeqKey(streams.Outbound, md.Sequence.Stream), md.Timestamp)
	}
	if err != nil {
		s.m.poison.Inc()
		s.log.Warn("invalid envelope rejected", "msg_id", m.ID, "seq", md.Sequence.Stream, "err", err)
		return s.reject(ctx, msg, m, 0, status.ReasonInvalid, err.Error())
	}
	m.AcceptedAt = md.Timestamp.UTC()
	if m.TTL > 0 {
		m.ExpiresAt = m.AcceptedAt.Add(m.TTL)
	}
	accepted := status.Event{ID: m.ID, Status: status.Accepted, Stage: "policy", Campaign: m.EventCampaign(), At: m.AcceptedAt, CallbackURL: m.CallbackURL}
	// The common case, a message never seen: "accepted" written on the
	// condition that the id has no event yet, one round trip. last is then
	// the sequence of this stage's latest event, so the next one skips its
	// read too (publish).
	last, err := s.pub.PublishNext(ctx, accepted, 0)
	switch {
	case errors.Is(err, status.ErrNotNext):
		// The id has events: a redelivery, a release, or the same id sent
		// again. A message whose status went past "accepted" was handled
		// already: a redelivery after a crash past the forward (which the
		// egress stream's dedup window would not catch if the restart took
		// longer), or the same id sent again after the 24 h dedup window.
		// Sending it again would be a second SMS.
		switch prev, err := s.pub.Latest(ctx, m.ID); {
		case err == nil && prev.Status != status.Accepted && !releasing(msg, prev.Status):
			s.m.out.WithLabelValues("already_handled").Inc()
			s.log.Warn("message id already handled; not sent again", "msg_id", m.ID, "status", prev.Status, "deliveries", md.NumDelivered)
			return consume.Ack()
		case err != nil && !errors.Is(err, status.ErrNotFound):
			return s.retry(msg, err)
		}
		if err := s.pub.Publish(ctx, accepted); err != nil {
			return s.retry(msg, err)
		}
	case err != nil:
		return s.retry(msg, err)
	}
	m, ferrs := envelope.Prepare(m, s.now(), s.opts.Region, s.opts.MaxChars)
	if len(ferrs) > 0 {
		return s.reject(ctx, msg, m, last, status.ReasonInvalid, joinFieldErrors(ferrs))
	}
	if o, held := s.hold(ctx, msg, m); held { // send_at in the future: see schedule.go
		return o
	}
	if !m.ExpiresAt.IsZero() && s.now().After(m.ExpiresAt) {
		return s.final(ctx, msg, last, status.Event{ID: m.ID, Status: status.Expired, Stage: "policy", Campaign: m.Campaign, Detail: "ttl passed before policy"}, "expired")
	}
	d, err := (*s.check.Load()).Check(ctx, m)
	if err != nil {
		return s.retry(msg, err)
	}
	if d.Reject != "" {
		return s.reject(ctx, msg, m, last, d.Reject, d.Detail)
	}
	m.Pool = d.Pool
	data, err := envelope.Encode(m)
	if err == nil && len(data) > maxForwardBytes {
		err = fmt.Errorf("envelope is %d bytes once encoded, more than %d", len(data), maxForwardBytes)
	}
	if err != nil {
		// Retrying cannot make it fit (or encode): it would come back forever.
		s.log.Warn("envelope cannot be forwarded", "msg_id", m.ID, "err", err)
		return s.reject(ctx, msg, m, last, status.ReasonInvalid, err.Error())
	}
	if err := s.forward(ctx, m, data); err != nil {
		return s.retry(msg, err)
	}
	if err := s.pub.PublishAfter(ctx, status.Event{ID: m.ID, Status: status.Queued, Stage: "policy", Campaign: m.Campaign, Pool: m.Pool}, last); err != nil {
		return s.retry(msg, err)
	}
	s.m.out.WithLabelValues("queued").Inc()
	return consume.Ack()
}

// maxForwardBytes bounds an encoded envelope on sms.egress.<pool>: SMS_EGRESS
// takes at most envelope.MaxEncodedBytes per message, headers included, and
// policy adds fields (accepted_at, expires_at, pool) to what it read, and
// encoding may escape characters ('<' becomes \u003c), so an envelope that
// fitted SMS_OUTBOUND may not fit SMS_EGRESS.
const maxForwardBytes = envelope.MaxEncodedBytes - 1024

// maxDetail bounds the detail of a status event: it quotes the sender's
// input, which must not make the event too big to publish.
const maxDetail = 1024

// forward publishes m, encoded as data, to its pool: transactional messages
// to the pool's priority lane, the rest to sms.egress.<pool>. Nats-Msg-Id is the
// message id, so a replay after a crash between this publish and the ack is
// dropped.
func (s *Stage) forward(ctx context.Context, m envelope.Message, data []byte) error {
	subject := streams.EgressSubject(m.Pool)
	if m.KindOrDefault() == envelope.Transactional {
		subject = streams.PrioritySubject(m.Pool) // never behind a marketing backlog
	}
	_, err := jspub.Publish(ctx, s.js.Conn(), &nats.Msg{Subject: subject, Data: data}, jspub.Options{MsgID: m.ID})
	if err != nil {
		return fmt.Errorf("forward %s to pool %s: %w", m.ID, m.Pool, err)
	}
	return nil
}

func (s *Stage) reject(ctx context.Context, msg jetstream.Msg, m envelope.Message, last uint64, reason Reason, detail string) consume.Outcome {
	return s.final(ctx, msg, last, status.Event{ID: m.ID, Status: status.Rejected, Reason: reason, Detail: clip(detail, maxDetail), Stage: "policy", Campaign: m.EventCampaign()}, "rejected")
}

// final publishes a terminal status, then acks; a failed publish is retried.
// It counts the message once it is settled, so a retry does not count twice.
func (s *Stage) final(ctx context.Context, msg jetstream.Msg, last uint64, ev status.Event, result string) consume.Outcome {
	if err := s.pub.PublishAfter(ctx, ev, last); err != nil && !errors.Is(err, status.ErrAlreadyFinal) {
		return s.retry(msg, err)
	}
	s.m.out.WithLabelValues(result).Inc()
	if ev.Status == status.Rejected {
		s.m.rejected.WithLabelValues(ev.Reason).Inc()
	}
	return consume.Ack()
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "… (truncated)"
	cut := n - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

func (s *Stage) retry(msg jetstream.Msg, err error) consume.Outcome {
	d := consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax)
	s.m.retries.Inc()
	s.log.Warn("policy could not decide, retrying", "retry_in", d, "err", err)
	return consume.Retry(d)
}

func joinFieldErrors(errs []envelope.FieldError) string {
	out := ""
	for i, e := range errs {
		if i > 0 {
			out += "; "
		}
		out += e.Error()
	}
	return out
}

// Metrics of the policy stage.
type Metrics struct {
	out      *prometheus.CounterVec
	rejected *prometheus.CounterVec
	poison   prometheus.Counter
	retries  prometheus.Counter
	inbound  *prometheus.CounterVec
}

// NewMetrics registers the stage's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		out: f.NewCounterVec(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "policy", Name: "messages_total",
			Help: "Messages the policy stage finished, by result (queued, rejected, expired, already_handled: the id had been handled before)."}, []string{"result"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "policy", Name: "rejected_total",
			Help: "Messages rejected by policy, by reason."}, []string{"reason"}),
		poison: f.NewCounter(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "policy", Name: "invalid_envelopes_total",
			Help: "Messages on sms.outbound that are not a valid envelope (bad JSON, wrong types, bad id)."}),
		retries: f.NewCounter(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "policy", Name: "retries_total",
			Help: "Messages given back to the broker because a write failed or a check could not decide."}),
		inbound: f.NewCounterVec(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "policy", Name: "inbound_total",
			Help: "Replies read on sms.inbound, by result (stop, start: recorded in sms_optout; other: not a keyword; invalid)."}, []string{"result"}),
	}
	for _, r := range []string{"stop", "start", "other", "invalid"} {
		m.inbound.WithLabelValues(r)
	}
	for _, r := range []string{"queued", "rejected", "expired", "already_handled"} {
		m.out.WithLabelValues(r)
	}
	for _, r := range []string{status.ReasonInvalid, status.ReasonBlacklist, status.ReasonOptedOut, status.ReasonDuplicate,
		status.ReasonDailyCP, status.ReasonWeeklyCP, status.ReasonNoRoute} {
		m.rejected.WithLabelValues(r)
	}
	return m
}
