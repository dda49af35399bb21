package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

// These tests pin down what schedule.go relies on in nats-server's message
// scheduling (2.12+, here v2.15.2), on the real SMS_OUTBOUND definition.

// publishSchedule publishes body as a schedule on sms.scheduled.<id> the way
// Stage.schedule does, with extra headers on top.
func publishSchedule(t *testing.T, js jetstream.JetStream, id string, at time.Time, extra nats.Header) *jetstream.PubAck {
	t.Helper()
	h := nats.Header{}
	h.Set(hdrSchedule, "@at "+at.UTC().Format(time.RFC3339Nano))
	h.Set(hdrScheduleTarget, releaseTarget)
	h.Set(hdrTTL, "never")
	for k, v := range extra {
		h[k] = v
	}
	ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: streams.ScheduledSubject(id), Header: h, Data: []byte(`{"id":"` + id + `"}`)},
		jetstream.WithMsgID(scheduleMsgID(id)))
	if err != nil {
		t.Fatalf("publish schedule %s: %v", id, err)
	}
	return ack
}

// lastOn is the last message on subject in SMS_OUTBOUND, nil when none.
func lastOn(t *testing.T, js jetstream.JetStream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("last on %s: %v", subject, err)
	}
	return m
}

func TestTheServerReleasesAScheduleAtItsTimeWithTheHeadersPolicyReads(t *testing.T) {
	e := newEnv(t)
	at := time.Now().Add(1500 * time.Millisecond).Truncate(time.Millisecond).Add(321 * time.Microsecond) // not on a whole second
	ack := publishSchedule(t, e.js, "srv-1", at, nats.Header{"X-Keep": {"kept"}})
	if ack.Duplicate {
		t.Fatal("first schedule reported as a duplicate")
	}
	if again := publishSchedule(t, e.js, "srv-1", at, nil); !again.Duplicate {
		t.Fatal("the same schedule published again (a redelivered hold) was stored twice: Nats-Msg-Id must drop it")
	}
	if m := lastOn(t, e.js, releaseTarget); m != nil {
		t.Fatalf("a message on %s at once, before the schedule's time", releaseTarget)
	}
	var rel *jetstream.RawStreamMsg
	natstest.Eventually(t, wait, "the schedule released to "+releaseTarget, func() bool {
		rel = lastOn(t, e.js, releaseTarget)
		return rel != nil
	})
	if rel.Time.Before(at) {
		t.Fatalf("released at %v, before its @at %v", rel.Time, at)
	}
	if got := rel.Header.Get(hdrScheduler); got != streams.ScheduledSubject("srv-1") {
		t.Errorf("Nats-Scheduler = %q, want the schedule's subject", got)
	}
	for _, h := range []string{jetstream.MsgIDHeader, hdrTTL, hdrSchedule, hdrScheduleTarget} {
		if v := rel.Header.Get(h); v != "" {
			t.Errorf("release carries %s: %q; the server strips it", h, v)
		}
	}
	if got := rel.Header.Get("X-Keep"); got != "kept" {
		t.Errorf("X-Keep = %q on the release, want the schedule's own header kept", got)
	}
	if string(rel.Data) != `{"id":"srv-1"}` {
		t.Errorf("release body %q, want the schedule's body", rel.Data)
	}
	natstest.Eventually(t, wait, "the schedule purged once released", func() bool {
		return lastOn(t, e.js, streams.ScheduledSubject("srv-1")) == nil
	})
	// A redelivered hold after the release must not schedule again.
	if again := publishSchedule(t, e.js, "srv-1", at, nil); !again.Duplicate {
		t.Fatal("the schedule published again after its release was stored: it would be released twice")
	}
}

func TestAScheduleSurvivesAServerRestartAndAPurgedOneNeverFires(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.RunServer(t, dir)
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(2 * time.Second)
	publishSchedule(t, js, "kept-1", at, nil)
	publishSchedule(t, js, "purged-1", at, nil)
	s, err := js.Stream(ctx, streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(streams.ScheduledSubject("purged-1"))); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()

	srv = natstest.RunServer(t, dir)
	_, js = natstest.Connect(t, srv)
	natstest.Eventually(t, wait, "the schedule made before the restart released after it", func() bool {
		return lastOn(t, js, releaseTarget) != nil
	})
	// Give the purged one a full second past its time to (wrongly) fire.
	time.Sleep(time.Until(at.Add(time.Second)))
	s, err = js.Stream(ctx, streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(releaseTarget))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[releaseTarget]; n != 1 {
		t.Fatalf("%d releases on %s, want exactly 1 (kept-1): a purged schedule must never fire", n, releaseTarget)
	}
	if got := lastOn(t, js, releaseTarget).Header.Get(hdrScheduler); got != streams.ScheduledSubject("kept-1") {
		t.Fatalf("the release came from %q, want kept-1's schedule", got)
	}
}

func TestAScheduleOutlivesTheStreamsMaxAge(t *testing.T) {
	// Nats-TTL: never exempts a message from max_age (72 h on SMS_OUTBOUND):
	// a campaign scheduled a week ahead must still be there. Shown on a
	// stream of the same kind with a one-second max age.
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AGE", Subjects: []string{"sms.outbound", "sms.scheduled.>"},
		MaxAge: time.Second, AllowMsgSchedules: true, AllowMsgTTL: true})
	if err != nil {
		t.Fatal(err)
	}
	publishSchedule(t, js, "week-1", time.Now().Add(7*24*time.Hour), nil)
	if _, err := js.Publish(ctx, "sms.outbound", []byte("ages out")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "the plain message aged out", func() bool {
		_, err := s.GetLastMsgForSubject(ctx, "sms.outbound")
		return errors.Is(err, jetstream.ErrMsgNotFound)
	})
	if _, err := s.GetLastMsgForSubject(ctx, streams.ScheduledSubject("week-1")); err != nil {
		t.Fatalf("the schedule aged out with the stream's max age: %v", err)
	}
}
