// Package receipts is the receipts stage: it reads the raw receipts that
// egress stored in SMS_DLR (durable consumer "receipts"), finds the message
// each belongs to in KV sms_dlr_index, and publishes its final status:
// delivered, undelivered or expired.
//
// Receipt ids are matched per link, never per bind: the index key is
// (link, canonical SMSC id), so a receipt the SMSC sends on another session
// of the link than the submit's still finds its message. The canonical id
// follows the link's id forms (dlr.CanonicalID): a link whose SMSC answers
// submit_sm_resp in hex and writes receipts in decimal sets resp "hex" and
// receipt "decimal".
//
// A receipt can overtake its index entry (the SMSC answers faster than egress
// writes the mapping): it is retried with backoff until the entry appears, or
// until OrphanAfter has passed since it was received; then it is an orphan,
// terminated and counted.
//
// A long message's parts each have a receipt; parts.go decides the message
// over all of them. A message whose receipt never comes ends expired with
// reason no_receipt after ReceiptTimeout (timeout.go).
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
	"golang.org/x/sync/errgroup"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Options configure the stage.
type Options struct {
	OrphanAfter time.Duration // give up on a receipt with no index entry after this; 10m when 0
	// A receipt still without its index entry ParkAfter after it was
	// received (30s when 0) is parked: acked, and looked at again every
	// RecheckEvery (1m when 0; the schedule has whole seconds) from a message
	// schedule, so a flood of orphans waits in the stream, not in the
	// consumer's max_ack_pending, until OrphanAfter.
	ParkAfter      time.Duration
	RecheckEvery   time.Duration
	ReceiptTimeout time.Duration // a submitted message with no final receipt after this ends expired (no_receipt); 48h when 0
	// ReceiptIDs is, per link, how its SMSC writes message ids in receipts
	// (dlr.IDText when absent); egress indexes with the link's submit_sm_resp form.
	ReceiptIDs map[string]dlr.IDForm
	BackoffMin time.Duration
	BackoffMax time.Duration
	Grace      time.Duration
}

// Stage is the receipts stage.
type Stage struct {
	js     jetstream.JetStream
	pub    *status.Publisher
	index  jetstream.KeyValue
	parts  jetstream.KeyValue
	timers jetstream.Stream // SMS_RECEIPT_TIMERS
	opts   Options
	log    *slog.Logger
	m      *Metrics
	now    func() time.Time
}

// New makes the stage.
func New(js jetstream.JetStream, pub *status.Publisher, opts Options, log *slog.Logger, m *Metrics) *Stage {
	if opts.OrphanAfter <= 0 {
		opts.OrphanAfter = 10 * time.Minute
	}
	if opts.ParkAfter <= 0 {
		opts.ParkAfter = 30 * time.Second
	}
	if opts.RecheckEvery < time.Second {
		opts.RecheckEvery = time.Minute
	}
	if opts.ReceiptTimeout <= 0 {
		opts.ReceiptTimeout = 48 * time.Hour
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 100 * time.Millisecond
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = 10 * time.Second
	}
	return &Stage{js: js, pub: pub, opts: opts, log: log, m: m, now: time.Now}
}

// Run consumes receipts, submitted events (to start their timeouts), the
// timeouts that fire and the parked receipts due again, until ctx is done; then it finishes the messages in
// hand. It returns nil when ctx ends, even before it got to consume.
func (s *Stage) Run(ctx context.Context) error {
	var err error
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{streams.BucketDLRIndex, &s.index}, {streams.BucketReceiptParts, &s.parts}} {
		*b.kv, err = s.js.KeyValue(ctx, b.name)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receipts: kv %s: %w", b.name, err)
		}
	}
	if s.timers, err = s.js.Stream(ctx, streams.ReceiptTimers); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("receipts: stream %s: %w", streams.ReceiptTimers, err)
	}
	type loop struct {
		stream, durable string
		h               consume.Handler
	}
	loops := []loop{
		{streams.DLR, streams.ConsumerReceipts, s.handle},
		{streams.ReceiptTimers, streams.ConsumerReceiptTimeouts, s.handleDue},
		{streams.ReceiptTimers, streams.ConsumerReceiptRechecks, s.handle},
	}
	conss := make([]jetstream.Consumer, len(loops))
	for i, l := range loops {
		conss[i], err = s.js.Consumer(ctx, l.stream, l.durable)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receipts: consumer %s/%s: %w", l.stream, l.durable, err)
		}
	}
	s.log.Info("receipts stage started")
	defer s.log.Info("receipts stage stopped")
	g, gctx := errgroup.WithContext(ctx)
	for i, l := range loops {
		log := s.log.With("consumer", l.durable)
		g.Go(func() error { return consume.Run(gctx, conss[i], l.h, consume.Options{Grace: s.opts.Grace, Log: log}) })
	}
	return g.Wait()
}

// handle correlates one receipt: from SMS_DLR, or parked and due again
// (a recheck, which carries when it was first received).
func (s *Stage) handle(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	md, err := msg.Metadata()
	if err != nil {
		return consume.Term("no metadata: " + err.Error())
	}
	pk := parkedFrom(msg, md)
	var rec dlr.Record
	if err := json.Unmarshal(msg.Data(), &rec); err != nil {
		s.m.results.WithLabelValues("invalid").Inc()
		s.log.Warn("receipt record is not valid JSON, skipped", "seq", pk.seq, "err", err)
		return consume.Term("invalid receipt record")
	}
	r, err := dlr.Parse(rec)
	if err != nil {
		s.m.results.WithLabelValues("invalid").Inc()
		s.log.Warn("not a delivery receipt, skipped", "seq", pk.seq, "link", rec.Link, "err", err)
		return consume.Term("not a receipt")
	}
	if md.NumDelivered == 1 && !pk.recheck {
		s.m.states.WithLabelValues(string(r.State)).Inc()
	}
	smscID := dlr.CanonicalID(r.ID, s.opts.ReceiptIDs[rec.Link])
	key := dlr.Key(rec.Link, smscID)
	kve, err := s.index.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		age := s.now().Sub(pk.received)
		switch {
		case age > s.opts.OrphanAfter:
			s.m.results.WithLabelValues("orphan").Inc()
			s.log.Warn("receipt matches no submitted message: orphan", "link", rec.Link, "smsc_id", r.ID, "stat", r.Stat)
			return consume.Term("orphan")
		case age < s.opts.ParkAfter:
			return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
		}
		return s.park(ctx, msg, pk)
	}
	if err != nil {
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	var e dlr.IndexEntry
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
	if e.Parts > 1 {
		agg, fresh, err := s.recordPart(ctx, e, partKey(e, smscID), partState{State: r.State, Stat: r.Stat, Err: r.Err, SMSCID: r.ID})
		if err != nil {
			s.log.Warn("cannot record the receipt of a part, retrying", "msg_id", e.ID, "err", err)
			return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
		}
		s.m.parts.WithLabelValues(map[bool]string{true: "recorded", false: "duplicate"}[fresh]).Inc()
		st, by, final := agg.outcome()
		if !final {
			s.m.results.WithLabelValues("part").Inc()
			return consume.Ack()
		}
		// Even when this part was recorded before (a redelivery after a
		// crash), publish: the status may not have made it; Publish makes a
		// second one a duplicate.
		ev.Status, ev.SMSCID, ev.Code = st, by.SMSCID, errCode(by.Err)
		ev.Detail = fmt.Sprintf("stat:%s parts:%d/%d", by.Stat, len(agg.Done), e.Parts) // parts with a final receipt so far
	}
	err = s.pub.PublishAfter(ctx, ev, e.StatusSeq) // no read when the submitted event is the latest
	switch {
	case errors.Is(err, status.ErrAlreadyFinal):
		// Final already: by an earlier delivery of this receipt (whose
		// drop may not have happened) or by its timeout (which fired).
		s.m.results.WithLabelValues("duplicate").Inc()
		s.dropTimer(ctx, ev.ID)
		return consume.Ack()
	case err != nil:
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.results.WithLabelValues(ev.Status).Inc()
	s.dropTimer(ctx, ev.ID)
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
