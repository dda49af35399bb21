package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
)

// A receipt can be lost (the SMSC never sends it, or sends it for an id we
// never indexed). So that such a message still ends in a terminal status,
// every submitted message gets a timeout that survives restarts: a message
// schedule in SMS_RECEIPT_TIMERS (the server keeps the timer, not this
// process). When it fires and the message is still not final, it ends
// expired with reason no_receipt. Both sides publish through status.Publish,
// whose compare-and-set lets exactly one terminal status in: a receipt that
// comes after the timeout is counted as a duplicate, a timeout that fires
// after the receipt is counted as settled.

// ReasonNoReceipt is the reason of the expired status a receipt timeout
// gives: the SMSC took the message but never said what became of it.
const ReasonNoReceipt = "no_receipt"

// Subjects of the receipt timers: the schedule of message <id> sits on
// TimerWaitSubject(id) and fires a copy of its submitted event on TimerDueSubject(id).
func TimerWaitSubject(id string) string { return "sms.receipt_timer.wait." + id }

// TimerDueSubject is where a message's receipt timeout lands when it fires.
func TimerDueSubject(id string) string { return "sms.receipt_timer.due." + id }

// handleSubmitted reads SMS_STATUS and, for each submitted event, schedules
// the message's receipt timeout at its submit time + ReceiptTimeout. Other
// events are acked at once. A message already final gets no timer; one
// whose timeout has passed (the stage was down that long) is due at once.
// A redelivered event replaces the schedule (one per subject), never adds one.
func (s *Stage) handleSubmitted(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	var ev status.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil || ev.ID == "" || !envelope.ValidID(ev.ID) {
		return consume.Ack() // an id that is not a subject token cannot have a timer
	}
	if ev.Stage == "receipts" && status.Terminal(ev.Status) && ev.Reason != ReasonNoReceipt {
		return s.dropTimer(ctx, msg, ev.ID)
	}
	if ev.Status != status.Submitted {
		return consume.Ack()
	}
	latest, err := s.pub.Latest(ctx, ev.ID)
	switch {
	case err == nil && status.Terminal(latest.Status):
		return consume.Ack()
	case err != nil && !errors.Is(err, status.ErrNotFound):
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	submitted := ev.At
	if md, err := msg.Metadata(); err == nil && (submitted.IsZero() || submitted.After(md.Timestamp)) {
		submitted = md.Timestamp // no time, or one from a clock ahead of the server's
	}
	at := submitted.Add(s.opts.ReceiptTimeout)
	if t := at.Truncate(time.Second); t.Before(at) {
		at = t.Add(time.Second) // @at takes whole seconds: never fire early
	}
	out := nats.NewMsg(TimerWaitSubject(ev.ID))
	out.Data = msg.Data()
	if at.After(s.now()) {
		out.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339))
		out.Header.Set("Nats-Schedule-Target", TimerDueSubject(ev.ID))
	} else {
		out.Subject = TimerDueSubject(ev.ID)
	}
	if _, err := s.js.PublishMsg(ctx, out); err != nil {
		s.log.Warn("cannot schedule receipt timeout, retrying", "msg_id", ev.ID, "err", err)
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.timeouts.WithLabelValues("scheduled").Inc()
	return consume.Ack()
}

// dropTimer removes the pending receipt timeout of a message its receipt
// settled: a timer per message for receipt_timeout (48 h) would otherwise
// pile up, some 170 million at 1,000 messages a second. A timer scheduled in
// a race with the receipt still fires, and is counted as settled.
func (s *Stage) dropTimer(ctx context.Context, msg jetstream.Msg, id string) consume.Outcome {
	if err := s.timers.Purge(ctx, jetstream.WithPurgeSubject(TimerWaitSubject(id))); err != nil {
		s.log.Warn("cannot drop a settled receipt timeout, retrying", "msg_id", id, "err", err)
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.timeouts.WithLabelValues("dropped").Inc()
	return consume.Ack()
}

// handleDue ends a message whose receipt timeout fired: expired, reason
// no_receipt, unless it is final already.
func (s *Stage) handleDue(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	var sub status.Event
	if err := json.Unmarshal(msg.Data(), &sub); err != nil || sub.ID == "" {
		s.log.Error("receipt timer unreadable, skipped", "subject", msg.Subject(), "err", err)
		return consume.Term("unreadable receipt timer")
	}
	ev := status.Event{ID: sub.ID, Status: status.Expired, Reason: ReasonNoReceipt, Stage: "receipts",
		Campaign: sub.Campaign, Pool: sub.Pool, Link: sub.Link, SMSCID: sub.SMSCID, Parts: sub.Parts,
		Detail: "no final receipt within " + s.opts.ReceiptTimeout.String()}
	err := s.pub.Publish(ctx, ev)
	switch {
	case errors.Is(err, status.ErrAlreadyFinal):
		s.m.timeouts.WithLabelValues("settled").Inc()
		return consume.Ack()
	case err != nil:
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.timeouts.WithLabelValues("expired").Inc()
	s.log.Info("no receipt in time: expired", "msg_id", sub.ID, "link", sub.Link, "smsc_id", sub.SMSCID)
	return consume.Ack()
}
