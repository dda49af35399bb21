package webhooks

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/status"
)

// An event whose host is failing (in backoff) or busy for a second or more
// does not wait in the webhooks consumer, where it would hold a place of
// max_ack_pending until the host is back: a dead host at 500 events a second
// would fill it in half an hour and stop every other host. It is parked
// instead: a copy goes to SMS_WEBHOOK_PARK as a message schedule that fires
// it on the due subject when the host may be tried again, and the original
// is acked only once the stream has the copy. The due copy is handled as the
// original was (in order per message through sms_webhooks, max_age from when
// SMS_STATUS stored the event), and parked again while the host still fails.
//
// A schedule replaces the one before it on its subject, and an event parks
// on a subject of its own, so an event has at most one schedule waiting.
// Each park also carries a Nats-Msg-Id: a redelivered original (the process
// died between parking and acking) or a redelivered due copy parks under the
// same id, which the stream drops as a duplicate even when the first park has
// fired already, so an event is never parked twice within the stream's
// duplicate window (10 min, past any ack wait). Beyond it, a second copy is
// at worst a duplicate that sms_webhooks drops. Nothing is lost: the
// original is acked only once the stream has stored its park.

const (
	parkPrefix = "sms.webhook.park."
	duePrefix  = "sms.webhook.due."

	hdrStatusSeq = "Smsflow-Status-Seq" // the event's SMS_STATUS sequence
	hdrStatusAt  = "Smsflow-Status-At"  // when SMS_STATUS stored it, RFC 3339

	// parkAfter is the shortest wait that parks: the server's schedules fire
	// on whole seconds, and a shorter wait costs the consumer little.
	parkAfter = time.Second
)

// ParkSubject is where an event with SMS_STATUS sequence seq waits while
// parked; DueSubject is where it lands when due.
func ParkSubject(seq uint64) string { return parkPrefix + strconv.FormatUint(seq, 10) }

// DueSubject is where a parked event lands when its schedule fires.
func DueSubject(seq uint64) string { return duePrefix + strconv.FormatUint(seq, 10) }

// parkID is the Nats-Msg-Id of a park of e from msg: the same for every
// delivery of msg. An original parks as "<seq>", a due copy as
// "<seq>.<its own SMS_WEBHOOK_PARK sequence>", so parking again from a due
// copy is never taken for the park that made it.
func parkID(msg jetstream.Msg, e event) string {
	id := "webhooks-" + strconv.FormatUint(e.seq, 10)
	if strings.HasPrefix(msg.Subject(), duePrefix) {
		if md, err := msg.Metadata(); err == nil {
			id += "." + strconv.FormatUint(md.Sequence.Stream, 10)
		}
	}
	return id
}

// park schedules e to come back on its due subject after wait (at least
// parkAfter, rounded up to a whole second of the server's clock), then acks
// msg. A park that fails gives msg back to the broker instead.
func (s *Stage) park(ctx context.Context, msg jetstream.Msg, e event, wait time.Duration) consume.Outcome {
	at := s.wall().Add(max(wait, parkAfter))
	if t := at.Truncate(time.Second); t.Before(at) {
		at = t.Add(time.Second)
	}
	out := nats.NewMsg(ParkSubject(e.seq))
	out.Data = e.data
	out.Header.Set(hdrStatusSeq, strconv.FormatUint(e.seq, 10))
	out.Header.Set(hdrStatusAt, e.at.UTC().Format(time.RFC3339Nano))
	out.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339))
	out.Header.Set("Nats-Schedule-Target", DueSubject(e.seq))
	out.Header.Set(nats.MsgIdHdr, parkID(msg, e))
	if _, err := s.js.PublishMsg(ctx, out); err != nil {
		s.m.events.WithLabelValues("error").Inc()
		s.log.Warn("cannot park a webhook, retrying", "msg_id", e.ev.ID, "seq", e.seq, "err", err)
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.events.WithLabelValues("parked").Inc()
	return consume.Ack()
}

// handleDue handles a parked event that is due: as handle does the
// original.
func (s *Stage) handleDue(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	h := msg.Headers()
	e := event{data: msg.Data()}
	seq, err := strconv.ParseUint(h.Get(hdrStatusSeq), 10, 64)
	if err == nil {
		e.seq = seq
		e.at, err = time.Parse(time.RFC3339Nano, h.Get(hdrStatusAt))
	}
	if err == nil {
		e.ev, err = status.DecodeEvent(e.data)
	}
	if err != nil || e.ev.ID == "" || msg.Subject() != DueSubject(e.seq) || !status.IsStatus(e.ev.Status) {
		s.m.events.WithLabelValues("invalid").Inc()
		s.log.Warn("parked webhook unreadable, not sent", "subject", msg.Subject(), "err", err)
		return consume.Term("invalid parked webhook")
	}
	return s.deliver(ctx, msg, e)
}
