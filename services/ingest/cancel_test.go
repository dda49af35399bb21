package ingest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// schedule holds id as the policy stage does (services/policy/schedule.go):
// a server message schedule on sms.scheduled.<id> targeting sms.outbound,
// and the statuses accepted, scheduled unless withStatus is false.
func (e env) schedule(t *testing.T, id string, at time.Time, withStatus bool) {
	t.Helper()
	ctx := context.Background()
	h := nats.Header{}
	h.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339Nano))
	h.Set("Nats-Schedule-Target", "sms.outbound")
	h.Set("Nats-TTL", "never")
	if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: streams.ScheduledSubject(id), Header: h, Data: []byte(`{"id":"` + id + `","to":"+420600000001","text":"hi"}`)}); err != nil {
		t.Fatal(err)
	}
	if !withStatus {
		return
	}
	for _, st := range []string{status.Accepted, status.Scheduled} {
		if err := e.pub.Publish(ctx, status.Event{ID: id, Status: st, Campaign: "bf"}); err != nil {
			t.Fatal(err)
		}
	}
}

// scheduled reports whether id's schedule is still in SMS_OUTBOUND.
func (e env) scheduled(t *testing.T, id string) bool {
	t.Helper()
	s, _ := e.outbound(t)
	_, err := s.GetLastMsgForSubject(context.Background(), streams.ScheduledSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestCancellingAScheduledMessageEndsItAndRemovesTheSchedule(t *testing.T) {
	e := newEnv(t, Options{})
	at := time.Now().Add(1500 * time.Millisecond)
	e.schedule(t, "bf-1", at, true)

	r := e.do(t, "DELETE", "/v1/messages/bf-1", nil)
	if r.code != 200 || r.body.Status != status.Rejected || r.body.Reason != status.ReasonCancelled || !r.body.Final {
		t.Fatalf("DELETE = %d %s, want 200 rejected/cancelled final", r.code, r.raw)
	}
	if e.scheduled(t, "bf-1") {
		t.Fatal("the schedule is still there after the cancel")
	}
	h, err := e.pub.History(context.Background(), "bf-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[2].Status != status.Rejected || h[2].Reason != status.ReasonCancelled || h[2].Campaign != "bf" {
		t.Fatalf("history %+v, want accepted, scheduled, rejected/cancelled in campaign bf", h)
	}
	time.Sleep(time.Until(at.Add(time.Second))) // past its time: a purged schedule must not fire
	if _, st := e.outbound(t); st.Subjects["sms.outbound"] != 0 {
		t.Fatalf("%d messages released on sms.outbound after the cancel, want 0", st.Subjects["sms.outbound"])
	}

	again := e.do(t, "DELETE", "/v1/messages/bf-1", nil)
	if again.code != 409 || again.body.Status != status.Rejected || again.body.Reason != status.ReasonCancelled {
		t.Fatalf("second DELETE = %d %s, want 409 with rejected/cancelled", again.code, again.raw)
	}
	if n := len(e.history(t, "bf-1")); n != 3 {
		t.Fatalf("%d events after a second cancel, want still 3", n)
	}
}

func (e env) history(t *testing.T, id string) []status.Event {
	t.Helper()
	h, err := e.pub.History(context.Background(), id, 100)
	if err != nil && !errors.Is(err, status.ErrNotFound) {
		t.Fatal(err)
	}
	return h
}

func TestAMessageThatIsNotScheduledCannotBeCancelled(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	for id, sts := range map[string][]string{
		"released-1":  {status.Accepted, status.Scheduled, status.Released},
		"queued-1":    {status.Accepted, status.Queued},
		"delivered-1": {status.Accepted, status.Queued, status.Submitted, status.Delivered},
		"accepted-1":  {status.Accepted},
	} {
		for _, st := range sts {
			if err := e.pub.Publish(ctx, status.Event{ID: id, Status: st}); err != nil {
				t.Fatal(err)
			}
		}
		if id == "released-1" {
			e.schedule(t, id, later, false) // a stale schedule must not make it cancellable
		}
	}
	for _, tc := range []struct{ id, want string }{
		{"released-1", status.Released},
		{"queued-1", status.Queued},
		{"delivered-1", status.Delivered},
		{"accepted-1", status.Accepted},
	} {
		r := e.do(t, "DELETE", "/v1/messages/"+tc.id, nil)
		if r.code != 409 || r.body.Status != tc.want || r.body.Error == "" {
			t.Errorf("DELETE %s = %d %s, want 409 naming status %s", tc.id, r.code, r.raw, tc.want)
		}
		if h := e.history(t, tc.id); status.Terminal(h[len(h)-1].Status) && tc.want != status.Delivered {
			t.Errorf("%s: a refused cancel wrote %+v", tc.id, h[len(h)-1])
		}
	}
	if r := e.do(t, "DELETE", "/v1/messages/nobody-1", nil); r.code != 404 {
		t.Errorf("DELETE of an unknown id = %d %s, want 404", r.code, r.raw)
	}
	if r := e.do(t, "DELETE", "/v1/messages/bad.id", nil); r.code != 400 {
		t.Errorf("DELETE of an invalid id = %d %s, want 400", r.code, r.raw)
	}
}

func TestAScheduleWhoseStatusesAgedOutCanStillBeCancelled(t *testing.T) {
	// A campaign scheduled more than SMS_STATUS's 7 days ahead has no status
	// events left, only its schedule.
	e := newEnv(t, Options{})
	e.schedule(t, "far-1", time.Now().Add(10*24*time.Hour), false)
	r := e.do(t, "DELETE", "/v1/messages/far-1", nil)
	if r.code != 200 || r.body.Reason != status.ReasonCancelled {
		t.Fatalf("DELETE = %d %s, want 200 cancelled", r.code, r.raw)
	}
	if e.scheduled(t, "far-1") {
		t.Fatal("the schedule is still there after the cancel")
	}
	if h := e.history(t, "far-1"); len(h) != 1 || h[0].Reason != status.ReasonCancelled {
		t.Fatalf("history %+v, want one rejected/cancelled", h)
	}
}
