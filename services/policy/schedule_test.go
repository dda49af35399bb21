package policy

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// countingCheck routes everything to pool default and counts its calls, so
// a test can tell when the checks ran.
func countingCheck(n *atomic.Int32) Check {
	routes := NewRoutes(nil, "default")
	return CheckFunc(func(ctx context.Context, m envelope.Message) (Decision, error) {
		n.Add(1)
		return routes.Check(ctx, m)
	})
}

// waitStatus waits until id's latest status is want, and returns its history.
func waitStatus(t *testing.T, e env, id, want string) []status.Event {
	t.Helper()
	var h []status.Event
	natstest.Eventually(t, wait, "message "+id+" has status "+want, func() bool {
		h = history(t, e, id)
		return len(h) > 0 && h[len(h)-1].Status == want
	})
	return h
}

func TestAFutureSendAtIsHeldUntilThenAndCheckedAtRelease(t *testing.T) {
	e := newEnv(t)
	var checks atomic.Int32
	s := newStage(t, e, countingCheck(&checks), testOptions())
	run(t, s)
	sendAt := time.Now().Add(2 * time.Second)
	publishJSON(t, e, map[string]any{"id": "later-1", "to": "+420600000001", "text": "Black Friday", "send_at": sendAt.Format(time.RFC3339Nano), "x_keep": 7})
	publishJSON(t, e, map[string]any{"id": "now-1", "to": "+420600000002", "text": "no send_at"})

	waitStatus(t, e, "later-1", status.Scheduled)
	waitSettled(t, e, "now-1")
	if n := len(egressOf(t, e, "later-1")); n != 0 {
		t.Fatalf("%d forwards of later-1 before its send_at", n)
	}
	if time.Now().After(sendAt) {
		t.Fatal("scheduled only after its send_at: too slow to tell held from sent")
	}
	if n := checks.Load(); n != 1 {
		t.Fatalf("checks ran %d times before the release, want 1 (now-1 only): caps count at release", n)
	}

	h := waitSettled(t, e, "later-1")
	if got, want := statuses(h), []string{status.Accepted, status.Scheduled, status.Released, status.Queued}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	out := egressOf(t, e, "later-1")
	if len(out) != 1 {
		t.Fatalf("%d forwards of later-1, want 1", len(out))
	}
	if checks.Load() != 2 {
		t.Fatalf("checks ran %d times, want 2: once per message", checks.Load())
	}
	if h[2].At.Before(sendAt) {
		t.Fatalf("released at %v, before send_at %v", h[2].At, sendAt)
	}
	if string(out[0].raw["x_keep"]) != "7" {
		t.Errorf("unknown field x_keep = %s after the schedule, want 7", out[0].raw["x_keep"])
	}
	if lastOn(t, e.js, streams.ScheduledSubject("later-1")) != nil {
		t.Error("the schedule is still there after its release")
	}
	drained(t, e)
}

func TestARedeliveredHoldDoesNotScheduleTwice(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(NewRoutes(nil, "default")), testOptions())
	m := envelope.Message{ID: "twice-1", To: "+420600000001", Text: "hi", SendAt: time.Now().Add(time.Second)}
	data, err := envelope.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The first attempt scheduled it and crashed before its ack; the
	// redelivery schedules it again, before and after the release.
	for range 2 {
		if err := s.schedule(ctx, m, data); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, wait, "the schedule released", func() bool { return lastOn(t, e.js, releaseTarget) != nil })
	if err := s.schedule(ctx, m, data); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a second schedule would fire at once (its time has passed)
	str, err := e.js.Stream(ctx, streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx, jetstream.WithSubjectFilter("sms.>"))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[releaseTarget]; n != 1 {
		t.Fatalf("%d releases, want 1", n)
	}
	if n := info.State.Subjects[streams.ScheduledSubject(m.ID)]; n != 0 {
		t.Fatalf("%d schedules left after the release, want 0", n)
	}
}

func TestAReleaseAfterACancelIsAckedAndNotSent(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(NewRoutes(nil, "default")), testOptions())
	run(t, s)
	sendAt := time.Now().Add(time.Second)
	publishJSON(t, e, map[string]any{"id": "cancel-1", "to": "+420600000001", "text": "hi", "send_at": sendAt.Format(time.RFC3339Nano)})
	waitStatus(t, e, "cancel-1", status.Scheduled)
	// A cancel that lost the race with the purge: its terminal status is in,
	// the schedule still fires.
	if err := e.pub.Publish(context.Background(), status.Event{ID: "cancel-1", Status: status.Rejected, Reason: status.ReasonCancelled}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "the schedule released", func() bool { return lastOn(t, e.js, releaseTarget) != nil })
	drained(t, e)
	if n := len(egressOf(t, e, "cancel-1")); n != 0 {
		t.Fatalf("a cancelled message was forwarded %d times", n)
	}
	h := history(t, e, "cancel-1")
	if got, want := statuses(h), []string{status.Accepted, status.Scheduled, status.Rejected}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
}

func TestAReleaseIsNeverHeldAgainEvenIfOurClockIsBehind(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(NewRoutes(nil, "default")), testOptions())
	s.now = func() time.Time { return time.Now().Add(-time.Hour) } // this process runs an hour late
	run(t, s)
	publishJSON(t, e, map[string]any{"id": "skew-1", "to": "+420600000001", "text": "hi", "send_at": time.Now().Add(500 * time.Millisecond).Format(time.RFC3339Nano)})
	h := waitSettled(t, e, "skew-1")
	if got, want := statuses(h), []string{status.Accepted, status.Scheduled, status.Released, status.Queued}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v: the release must go on, not be scheduled again", got, want)
	}
	if n := len(egressOf(t, e, "skew-1")); n != 1 {
		t.Fatalf("%d forwards, want 1", n)
	}
}

func TestAnInvalidScheduledMessageIsRejectedAtOnceNotAtItsTime(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(NewRoutes(nil, "default")), testOptions())
	run(t, s)
	publishJSON(t, e, map[string]any{"id": "bad-1", "to": "not a number", "text": "hi", "send_at": time.Now().Add(time.Hour).Format(time.RFC3339)})
	publishJSON(t, e, map[string]any{"id": "far-1", "to": "+420600000001", "text": "hi", "send_at": time.Now().AddDate(2, 0, 0).Format(time.RFC3339)})
	for _, id := range []string{"bad-1", "far-1"} {
		h := waitSettled(t, e, id)
		if last := h[len(h)-1]; last.Status != status.Rejected || last.Reason != status.ReasonInvalid {
			t.Errorf("%s: last event %+v, want rejected/invalid", id, last)
		}
		if lastOn(t, e.js, streams.ScheduledSubject(id)) != nil {
			t.Errorf("%s: scheduled though invalid", id)
		}
	}
}
