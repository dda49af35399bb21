package dlr

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/status"
)

// A receipt can be lost (the SMSC never sends it, or sends it for an id we
// never indexed). So that such a message still ends in a terminal status,
// every submitted message gets a receipt timeout that survives restarts: a
// message schedule in SMS_RECEIPT_TIMERS (the server keeps the timer, not a
// process). Egress arms it when it records a submit, before the submitted
// status and the index entries, so a receipt (which needs the index entry)
// always finds it to drop; the receipts stage drops it when the message's
// final receipt is in, and ends the message expired (no_receipt) when it
// fires first.

// TimerWaitSubject is where the schedule of message id's receipt timeout
// sits; one per message: a new one (a resubmit) replaces it.
func TimerWaitSubject(id string) string { return "sms.receipt_timer.wait." + id }

// TimerDueSubject is where message id's receipt timeout lands when it fires.
func TimerDueSubject(id string) string { return "sms.receipt_timer.due." + id }

// ArmTimeout schedules the receipt timeout of the message whose submitted
// event is ev: at ev.At + timeout, rounded up to the second (a schedule's
// @at takes whole seconds: it never fires early), a copy of ev lands on
// TimerDueSubject. A time already past fires at once.
func ArmTimeout(ctx context.Context, js jetstream.JetStream, ev status.Event, timeout time.Duration) error {
	data, err := status.EncodeEvent(ev)
	if err != nil {
		return fmt.Errorf("receipt timer of %s: %w", ev.ID, err)
	}
	at := ev.At.Add(timeout)
	if t := at.Truncate(time.Second); t.Before(at) {
		at = t.Add(time.Second)
	}
	out := nats.NewMsg(TimerWaitSubject(ev.ID))
	out.Data = data
	if at.After(time.Now()) {
		out.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339))
		out.Header.Set("Nats-Schedule-Target", TimerDueSubject(ev.ID))
	} else {
		out.Subject = TimerDueSubject(ev.ID)
	}
	if _, err := js.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("receipt timer of %s: %w", ev.ID, err)
	}
	return nil
}

// DropTimeout removes the pending receipt timeout of message id (its final
// receipt is in): a timer per message for 48 h would otherwise pile up, some
// 170 million at 1,000 messages a second. timers is SMS_RECEIPT_TIMERS.
func DropTimeout(ctx context.Context, timers jetstream.Stream, id string) error {
	if err := timers.Purge(ctx, jetstream.WithPurgeSubject(TimerWaitSubject(id))); err != nil {
		return fmt.Errorf("drop the receipt timer of %s: %w", id, err)
	}
	return nil
}
