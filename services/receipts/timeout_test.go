package receipts

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// submitted does what egress does when it records a submit at time at: it
// arms the receipt timeout, then publishes the submitted event.
func (h *harness) submitted(id, smscID string, at time.Time) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ev := status.Event{ID: id, Status: status.Submitted, Stage: "egress", Link: link, SMSCID: smscID, Parts: 1, At: at}
	if err := dlr.ArmTimeout(ctx, h.js, ev, h.timeout); err != nil {
		h.t.Fatalf("arm the receipt timeout of %s: %v", id, err)
	}
	if err := h.pub.Publish(ctx, ev); err != nil {
		h.t.Fatalf("publish submitted %s: %v", id, err)
	}
}

func (h *harness) timeouts(result string) float64 {
	return testutil.ToFloat64(h.m.timeouts.WithLabelValues(result))
}

func (h *harness) waitTimeouts(result string, n float64) {
	h.t.Helper()
	h.until("want timeouts_total{result="+result+"} to reach the expected count", func() bool { return h.timeouts(result) >= n })
	if got := h.timeouts(result); got != n {
		h.t.Fatalf("timeouts_total{result=%q} = %v, want %v", result, got, n)
	}
}

// due reports whether the timer of id has fired and is not yet handled.
func (h *harness) due(id string) bool { return h.stored(dlr.TimerDueSubject(id)) }

// stored reports whether SMS_RECEIPT_TIMERS holds a message on subject.
func (h *harness) stored(subject string) bool {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, streams.ReceiptTimers)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = s.GetLastMsgForSubject(ctx, subject)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		h.t.Fatalf("read %s: %v", subject, err)
	}
	return err == nil
}

func TestAMessageWhoseReceiptNeverComesEndsExpiredThenALateReceiptLoses(t *testing.T) {
	t.Parallel() // mostly waiting for timers to fire
	h := start(t, Options{ReceiptTimeout: time.Second})
	const id = "01JMSG000000000000000NORCP"
	at := time.Now()
	h.submitted(id, "n1", at)
	h.waitTimeouts("expired", 1)
	if d := time.Since(at); d < time.Second {
		t.Fatalf("expired %v after submit, want no sooner than the receipt timeout (1s)", d)
	}
	ev := h.onlyTerminal(id)
	if ev.Status != status.Expired || ev.Reason != ReasonNoReceipt || ev.Stage != "receipts" || ev.SMSCID != "n1" {
		t.Fatalf("event = %+v, want expired, reason no_receipt, stage receipts, smsc_id n1", ev)
	}
	// Nothing is left behind: the schedule is gone once fired, the fired
	// timeout once handled (SMS_RECEIPT_TIMERS is a work queue).
	h.until("want the handled timeout removed from SMS_RECEIPT_TIMERS", func() bool { return !h.due(id) })
	h.until("want the fired schedule removed", func() bool { return !h.stored(dlr.TimerWaitSubject(id)) })
	// The receipt turns up after all: the message stays expired.
	h.indexed("n1", id)
	h.receipt(dlr.Record{Text: text("n1", "DELIVRD", "000")})
	h.waitCount("duplicate", 1)
	h.drained()
	if ev := h.onlyTerminal(id); ev.Status != status.Expired {
		t.Fatalf("status = %s, want expired to stay", ev.Status)
	}
	if n := h.count(status.Delivered); n != 0 {
		t.Fatalf("delivered = %v, want 0", n)
	}
	if n := len(h.history(id)); n != 2 {
		t.Fatalf("%d events, want 2 (submitted, expired)", n)
	}
}

func TestAReceiptBeforeTheTimeoutWinsAndTheTimeoutIsSettled(t *testing.T) {
	t.Parallel() // mostly waiting for timers to fire
	h := start(t, Options{ReceiptTimeout: 2 * time.Second})
	const id = "01JMSG000000000000000INTME"
	h.submitted(id, "w1", time.Now())
	if !h.stored(dlr.TimerWaitSubject(id)) {
		t.Fatal("no receipt timer scheduled")
	}
	h.indexed("w1", id)
	h.receipt(dlr.Record{Text: text("w1", "DELIVRD", "000")})
	h.waitCount(status.Delivered, 1)
	// The receipt settled it: the timer is dropped, not left to fire.
	h.waitTimeouts("dropped", 1)
	if h.stored(dlr.TimerWaitSubject(id)) {
		t.Fatal("the settled message's receipt timer is still scheduled")
	}
	time.Sleep(3 * time.Second) // past the 2 s timeout: nothing fires
	for _, r := range []string{"expired", "settled"} {
		if n := h.timeouts(r); n != 0 {
			t.Fatalf("timeouts %s = %v, want 0", r, n)
		}
	}
	if ev := h.onlyTerminal(id); ev.Status != status.Delivered {
		t.Fatalf("status = %s, want delivered", ev.Status)
	}
}

// A timeout that fires for a message already final changes nothing and is
// counted settled; one whose time passed while the stage was down is due at
// once when it comes back.
func TestATimeoutOfAFinalMessageSettlesAndALateOneIsDueAtOnce(t *testing.T) {
	t.Parallel() // mostly waiting for timers to fire
	h := start(t, Options{ReceiptTimeout: time.Second})
	h.stop()
	const id = "01JMSG000000000000000FINAL"
	h.submitted(id, "f1", time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.pub.Publish(ctx, status.Event{ID: id, Status: status.Delivered, Stage: "receipts"}); err != nil {
		t.Fatal(err)
	}
	// A message not final, whose timeout passed while the stage was down: due at once.
	const late = "01JMSG000000000000000LATER"
	h.submitted(late, "f2", time.Now().Add(-time.Hour))
	if !h.due(late) {
		t.Fatal("a timeout already past was not due at once")
	}
	h.run(Options{ReceiptTimeout: time.Second})
	h.waitTimeouts("expired", 1)
	h.waitTimeouts("settled", 1)
	if ev := h.onlyTerminal(late); ev.Status != status.Expired || ev.Reason != ReasonNoReceipt {
		t.Fatalf("late message = %+v, want expired no_receipt", ev)
	}
	if ev := h.onlyTerminal(id); ev.Status != status.Delivered {
		t.Fatalf("final message = %+v, want delivered to stay", ev)
	}
	h.until("want both timers handled and gone", func() bool {
		return !h.due(id) && !h.due(late) && !h.stored(dlr.TimerWaitSubject(id))
	})
}

// The timer lives in the server: a stage that is down when it fires finds it
// when it comes back.
func TestAReceiptTimeoutSurvivesARestartOfTheStage(t *testing.T) {
	t.Parallel() // mostly waiting for timers to fire
	h := start(t, Options{ReceiptTimeout: time.Second})
	const id = "01JMSG000000000000000RSTRT"
	h.submitted(id, "s1", time.Now())
	h.stop()
	h.until("want the timer to fire while the stage is down", func() bool { return h.due(id) })
	if evs := h.history(id); len(evs) != 1 {
		t.Fatalf("events while the stage is down = %+v, want only submitted", evs)
	}
	h.run(Options{ReceiptTimeout: time.Second})
	h.waitTimeouts("expired", 1)
	if ev := h.onlyTerminal(id); ev.Status != status.Expired || ev.Reason != ReasonNoReceipt {
		t.Fatalf("event = %+v, want expired no_receipt", ev)
	}
}
