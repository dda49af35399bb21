package receipts

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
)

// A receipt whose index entry is missing is retried in the consumer for a
// short while (the entry is usually a few milliseconds behind); after
// ParkAfter it is parked instead: a copy goes to SMS_RECEIPT_TIMERS as a
// message schedule that fires it on the recheck subject RecheckEvery later,
// and the original is acked. The copy carries when the receipt was first
// received, so OrphanAfter still counts from then, and the SMS_DLR sequence,
// which names its schedule: a redelivery replaces the schedule, never adds one.

const (
	parkPrefix    = "sms.receipt_timer.park."
	recheckPrefix = "sms.receipt_timer.recheck."

	hdrReceived = "Smsflow-Received-At" // when SMS_DLR stored the receipt, RFC 3339
	hdrDLRSeq   = "Smsflow-Dlr-Seq"     // its SMS_DLR sequence
)

// parked says where a receipt comes from.
type parked struct {
	recheck  bool      // a parked receipt, due again
	received time.Time // when SMS_DLR stored it
	seq      uint64    // its SMS_DLR sequence
}

func parkedFrom(msg jetstream.Msg, md *jetstream.MsgMetadata) parked {
	p := parked{received: md.Timestamp, seq: md.Sequence.Stream}
	if !strings.HasPrefix(msg.Subject(), recheckPrefix) {
		return p
	}
	p.recheck = true
	h := msg.Headers()
	if t, err := time.Parse(time.RFC3339Nano, h.Get(hdrReceived)); err == nil {
		p.received = t
	}
	if n, err := strconv.ParseUint(h.Get(hdrDLRSeq), 10, 64); err == nil {
		p.seq = n
	}
	return p
}

// park schedules the receipt to come back on the recheck subject, then acks it.
func (s *Stage) park(ctx context.Context, msg jetstream.Msg, p parked) consume.Outcome {
	at := s.now().Add(s.opts.RecheckEvery)
	if last := p.received.Add(s.opts.OrphanAfter + time.Second); at.After(last) {
		at = last // the last look, just after it is an orphan
	}
	if t := at.Truncate(time.Second); t.Before(at) {
		at = t.Add(time.Second)
	}
	seq := strconv.FormatUint(p.seq, 10)
	out := nats.NewMsg(parkPrefix + seq)
	out.Data = msg.Data()
	out.Header.Set(hdrReceived, p.received.UTC().Format(time.RFC3339Nano))
	out.Header.Set(hdrDLRSeq, seq)
	out.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339))
	out.Header.Set("Nats-Schedule-Target", recheckPrefix+seq)
	if _, err := s.js.PublishMsg(ctx, out); err != nil {
		s.log.Warn("cannot park a receipt without index entry, retrying", "seq", seq, "err", err)
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.parked.Inc()
	return consume.Ack()
}
