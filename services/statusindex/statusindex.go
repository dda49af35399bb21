// Package statusindex is the status indexer stage: it reads every event of
// SMS_STATUS (durable consumer "status"), writes each message's latest status
// to KV sms_status (key = id, value = the event's JSON), and keeps the
// campaign counters of SMS_COUNTS, so a campaign's progress is a handful of
// reads, never a scan of its messages.
//
// Exact under redelivery and with several instances:
//   - the KV entry is written with a compare-and-set on its revision, and
//     carries the SMS_STATUS sequence of the event it holds (header
//     Smsflow-Seq) and the status it replaced (Smsflow-From): an event older
//     than the one held is stale and changes nothing, so two events of one
//     message applied in either order, or by two instances, end with the
//     later one and one transition each;
//   - only the writer that won the compare-and-set counts, after writing: the
//     counter adds carry Nats-Msg-Id "<seq>.<subject>", so an event
//     redelivered after its write (the ack was lost, or the process died)
//     adds again and the stream drops the adds that already landed; and a
//     writer replacing an entry re-sends that entry's adds the same way,
//     which covers a death between its write and its adds even when a later
//     event overtook the redelivery.
//
// The duplicate window of SMS_COUNTS (1 h) bounds this: adds are sent again
// only for an entry written less than 5/6 of it ago (else they would no
// longer be dropped, and a receipt hours after its "submitted" would count
// that move twice). So an indexer that dies in the milliseconds between its
// write and its adds, while no other indexer runs, and is restarted more
// than 50 minutes later, leaves those few in-flight events uncounted.
package statusindex

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/recent"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Headers of a sms_status entry written by the indexer.
const (
	HeaderSeq  = "Smsflow-Seq"  // SMS_STATUS sequence of the event held
	HeaderFrom = "Smsflow-From" // status it replaced; absent for a message's first
)

// Options configure the stage.
type Options struct {
	Concurrency int           // events handled at once; 16 when 0
	BackoffMin  time.Duration // retry delay after a failed write; 100ms when 0
	BackoffMax  time.Duration // 5s when 0
	Grace       time.Duration
}

// Stage is the status indexer.
type Stage struct {
	js    jetstream.JetStream
	pub   *status.Publisher
	kv    jetstream.Stream // the stream behind KV sms_status, for reads with headers
	opts  Options
	log   *slog.Logger
	m     *Metrics
	locks [64]sync.Mutex // per id hash: one instance handles one message's events one at a time
	seed  maphash.Seed
	now   func() time.Time

	resendWithin time.Duration // counter adds older than this are not sent again

	// written holds the entries this instance wrote and counted lately, by
	// message id: a message's next event (seconds later, mostly here) then
	// needs no read, and the entry it replaces no second count. A stale one
	// (another instance wrote since) fails the compare-and-set and is read.
	written *recent.Map[string, entry]
}

// writtenSize bounds Stage.written: some seconds of events at thousands of
// messages a second.
const writtenSize = 1 << 14

// New makes the stage.
func New(js jetstream.JetStream, pub *status.Publisher, opts Options, log *slog.Logger, m *Metrics) *Stage {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 100 * time.Millisecond
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = 5 * time.Second
	}
	return &Stage{js: js, pub: pub, opts: opts, log: log, m: m, seed: maphash.MakeSeed(), now: time.Now,
		written: recent.New[string, entry](writtenSize)}
}

// Run consumes until ctx is done, then finishes the events in hand. It
// returns nil when ctx ends, even before it got to consume.
func (s *Stage) Run(ctx context.Context) error {
	err := s.bind(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	cons, err := s.js.Consumer(ctx, streams.Status, streams.ConsumerStatus)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("statusindex: consumer: %w", err)
	}
	s.log.Info("status indexer started")
	defer s.log.Info("status indexer stopped")
	return consume.Run(ctx, cons, s.handle, consume.Options{Batch: 256, Concurrency: s.opts.Concurrency, Grace: s.opts.Grace, Log: s.log})
}

// bind finds the stream behind KV sms_status, and the duplicate window of
// SMS_COUNTS, which bounds how long a re-sent counter add is dropped.
func (s *Stage) bind(ctx context.Context) error {
	kv, err := s.js.Stream(ctx, "KV_"+streams.BucketStatus)
	if err != nil {
		return fmt.Errorf("statusindex: kv %s: %w", streams.BucketStatus, err)
	}
	counts, err := s.js.Stream(ctx, streams.Counts)
	if err != nil {
		return fmt.Errorf("statusindex: stream %s: %w", streams.Counts, err)
	}
	s.kv = kv
	// A margin for clock skew between this host and the server.
	s.resendWithin = counts.CachedInfo().Config.Duplicates * 5 / 6
	return nil
}

func (s *Stage) handle(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	md, err := msg.Metadata()
	if err != nil {
		return consume.Term("no metadata: " + err.Error())
	}
	ev, err := status.DecodeEvent(msg.Data())
	if err != nil || ev.ID == "" || msg.Subject() != status.Subject(ev.ID) {
		s.m.events.WithLabelValues("invalid").Inc()
		s.log.Warn("status event unreadable, skipped", "seq", md.Sequence.Stream, "subject", msg.Subject(), "err", err)
		return consume.Term("invalid status event")
	}
	if !status.IsStatus(ev.Status) {
		s.m.events.WithLabelValues("attempt").Inc() // retry, throttled, submit_unknown: history only
		return consume.Ack()
	}
	l := &s.locks[maphash.String(s.seed, ev.ID)%uint64(len(s.locks))]
	l.Lock()
	result, err := s.apply(ctx, md.Sequence.Stream, ev)
	l.Unlock()
	if err != nil {
		s.m.events.WithLabelValues("error").Inc()
		s.log.Warn("status not indexed, will retry", "msg_id", ev.ID, "seq", md.Sequence.Stream, "err", err)
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.events.WithLabelValues(result).Inc()
	return consume.Ack()
}

// entry is a sms_status entry as the indexer wrote it.
type entry struct {
	rev     uint64 // KV revision; 0 when there is none
	seq     uint64 // SMS_STATUS sequence of the event it holds
	from    string
	ev      status.Event
	written time.Time
	counted bool // by this instance: its adds need not be sent again
}

// recent reports whether e was written recently enough that its counter adds
// may be sent again: a re-sent add is dropped only within the duplicate
// window of SMS_COUNTS. An older entry is taken as counted; its writer had
// that long to count it, and its event is redelivered after the consumer's
// ack wait (30 s), far sooner.
func (s *Stage) recent(e entry) bool { return s.now().Sub(e.written) < s.resendWithin }

func (s *Stage) read(ctx context.Context, id string) (entry, error) {
	raw, err := s.kv.GetLastMsgForSubject(ctx, kvSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, fmt.Errorf("read sms_status %s: %w", id, err)
	}
	e := entry{rev: raw.Sequence, written: raw.Time}
	if op := raw.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return e, nil // deleted by hand: the next event starts it again
	}
	e.seq, _ = strconv.ParseUint(raw.Header.Get(HeaderSeq), 10, 64)
	e.from = raw.Header.Get(HeaderFrom)
	if e.ev, err = status.DecodeEvent(raw.Data); err != nil {
		e.ev = status.Event{} // not ours (written by hand): replaced as if new
	}
	return e, nil
}

func kvSubject(id string) string { return "$KV." + streams.BucketStatus + "." + id }

// casAttempts bounds the compare-and-set loop: each lost round means another
// instance wrote this message's entry in between.
const casAttempts = 8

// apply indexes event ev at sequence seq and says what it did: indexed,
// stale (a later event is held), or replayed (this event is held: its adds
// are sent again, and dropped as duplicates if they had landed).
func (s *Stage) apply(ctx context.Context, seq uint64, ev status.Event) (string, error) {
	for range casAttempts {
		// A remembered entry may be stale (written over by another
		// instance, deleted by hand, lost with a host): it only spares the
		// read of the common case, an event newer than it, where the
		// compare-and-set catches a stale one. A verdict without a write
		// (stale, replayed) is made on what KV holds.
		cur, ok := s.written.Get(ev.ID)
		if !ok || cur.seq >= seq {
			var err error
			if cur, err = s.read(ctx, ev.ID); err != nil {
				return "", err
			}
		}
		switch {
		case cur.seq > seq:
			return "stale", nil
		case cur.seq == seq && cur.seq != 0:
			if !s.recent(cur) {
				return "replayed", nil
			}
			return "replayed", s.count(ctx, cur)
		}
		// The campaign stays with the message: a receipt's event has none,
		// and an event overtaking its message's first has to look it up.
		switch {
		case cur.ev.Campaign != "":
			ev.Campaign = cur.ev.Campaign
		case ev.Campaign == "" && cur.seq == 0:
			first, err := s.pub.First(ctx, ev.ID)
			if err != nil && !errors.Is(err, status.ErrNotFound) {
				return "", err
			}
			ev.Campaign = first.Campaign
		}
		next := entry{seq: seq, ev: ev}
		if cur.seq != 0 {
			next.from = cur.ev.Status // an entry not written here has no counts to move
		}
		data, err := status.EncodeEvent(ev)
		if err != nil {
			return "", err
		}
		m := &nats.Msg{Subject: kvSubject(ev.ID), Header: nats.Header{}, Data: data}
		m.Header.Set(HeaderSeq, strconv.FormatUint(seq, 10))
		if next.from != "" {
			m.Header.Set(HeaderFrom, next.from)
		}
		ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(cur.rev))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			s.written.Delete(ev.ID)
			continue // another instance wrote it: look again
		}
		if err != nil {
			s.written.Delete(ev.ID)
			return "", fmt.Errorf("write sms_status %s: %w", ev.ID, err)
		}
		// The entry replaced may be one whose writer died before counting.
		if cur.seq != 0 && !cur.counted && s.recent(cur) {
			if err := s.count(ctx, cur); err != nil {
				s.written.Delete(ev.ID)
				return "", err
			}
		}
		if err := s.count(ctx, next); err != nil {
			s.written.Delete(ev.ID)
			return "", err
		}
		next.rev, next.written, next.counted = ack.Sequence, s.now(), true
		s.written.Put(ev.ID, next)
		return "indexed", nil
	}
	return "", fmt.Errorf("write sms_status %s: lost the compare-and-set %d times", ev.ID, casAttempts)
}

// count sends the counter adds of the transition e records, keyed by its
// sequence: sending them twice adds once.
func (s *Stage) count(ctx context.Context, e entry) error {
	return status.AddCounts(ctx, s.js, strconv.FormatUint(e.seq, 10), status.Transition(e.ev.Campaign, e.from, e.ev.Status))
}

// Metrics of the status indexer.
type Metrics struct {
	events *prometheus.CounterVec
}

// NewMetrics registers the indexer's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{events: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Namespace: "smsflow", Subsystem: "statusindex", Name: "events_total",
		Help: "Status events read by the indexer, by result (indexed, stale, replayed, attempt, invalid, error).",
	}, []string{"result"})}
	for _, r := range []string{"indexed", "stale", "replayed", "attempt", "invalid", "error"} {
		m.events.WithLabelValues(r)
	}
	return m
}
