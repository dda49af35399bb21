package policy

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
)

// An id whose status went past "accepted" is not forwarded again: a policy
// that restarts long after a crash between forward and ack, or a producer
// that reuses an id after the 24 h dedup window, must not cause a second SMS.
func TestAMessageAlreadyHandledIsNotForwardedAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.pub.Publish(ctx, status.Event{ID: "done-1", Status: status.Delivered}); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Publish(ctx, status.Event{ID: "queued-1", Status: status.Queued}); err != nil {
		t.Fatal(err)
	}
	s := newStage(t, e, Chain(NewRoutes(nil, "default")), testOptions())
	run(t, s)
	publishJSON(t, e, map[string]any{"id": "done-1", "to": "+420600000001", "text": "again"})
	publishJSON(t, e, map[string]any{"id": "queued-1", "to": "+420600000002", "text": "again"})
	publishJSON(t, e, map[string]any{"id": "new-1", "to": "+420600000003", "text": "first time"})
	natstest.Eventually(t, wait, "want the new message queued", func() bool { return len(egressOf(t, e, "new-1")) == 1 })
	drained(t, e)
	if got := testutil.ToFloat64(s.m.out.WithLabelValues("already_handled")); got != 2 {
		t.Fatalf("already_handled = %v, want 2", got)
	}
	if n := len(egressOf(t, e, "done-1")) + len(egressOf(t, e, "queued-1")); n != 0 {
		t.Fatalf("%d handled messages forwarded again", n)
	}
}
