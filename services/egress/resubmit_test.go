package egress

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

func TestUnknownBefore(t *testing.T) {
	retry := func(st string, attempt, parts int) status.Event {
		return status.Event{Status: st, Stage: "egress", Attempt: attempt, Parts: parts}
	}
	for _, c := range []struct {
		name    string
		attempt int
		latest  status.Event
		want    bool
	}{
		{"first delivery", 1, status.Event{Status: status.Queued, Stage: "policy", Attempt: 1}, false},
		{"redelivered with no attempt recorded (crash)", 2, status.Event{Status: status.Queued, Stage: "policy", Attempt: 1}, true},
		{"redelivered with no event at all", 2, status.Event{}, true},
		{"after a refusal (0x14)", 2, retry(status.Retry, 1, 0), false},
		{"after a throttle", 3, retry(status.Throttled, 2, 0), false},
		{"after a give-back", 2, retry(status.Retry, 1, 0), false},
		{"after submit_unknown", 2, retry(status.SubmitUnknown, 1, 0), true},
		{"after a refusal with parts accepted", 2, retry(status.Retry, 1, 2), true},
		{"a delivery after the refusal left no record", 3, retry(status.Retry, 1, 0), true},
		{"a refusal recorded by another stage", 2, status.Event{Status: status.Retry, Stage: "policy", Attempt: 1}, true},
	} {
		if got := unknownBefore(c.attempt, c.latest); got != c.want {
			t.Errorf("%s: unknownBefore(%d, %+v) = %v, want %v", c.name, c.attempt, c.latest, got, c.want)
		}
	}
}

// A redelivered message is counted in resubmits_unknown_total when it is
// submitted again with its earlier delivery's outcome unknown (no record: a
// crash; or submit_unknown), and not after a refusal, a throttle or a
// give-back, which leave records. A give-back of a message that was already
// risky leaves none, so the submit after it still counts.
func TestAResubmitIsCountedOnlyWhenAnEarlierSubmitMayHaveReachedTheSMSC(t *testing.T) {
	const (
		crashed   = 0 // delivery 1 held by a process that died: no record
		refused   = 1 // first submit answered 0x14
		gaveBack  = 2 // delivery 1 given back unsent (link paused)
		twice     = 3 // crashed, then given back: still risky
		unknown   = 4 // delivery 1 recorded submit_unknown
		throttled = 5 // first submit answered 0x58
		n         = 6
	)
	e := newEnv(t, smscsim.Options{NoReceipts: true, Fail: func(dst string, k int) pdu.Status {
		switch {
		case dst == simDst(refused) && k == 1:
			return 0x14 // ESME_RMSGQFUL
		case dst == simDst(throttled) && k == 1:
			return 0x58 // ESME_RTHROTTLED
		}
		return 0
	}})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	logs := &natstest.Buffer{}
	lo := e.linkOpts(100, 10, 2)
	m := NewMetrics(prometheus.NewRegistry())
	s := New(e.js, e.pub, []LinkOptions{lo}, fastRetries(5), slog.New(slog.NewTextHandler(logs, nil)), m)

	// The first deliveries of the risky ones and of the given-back one are
	// played by hand: each comes back at once (twice) or after 2 s.
	for _, i := range []int{crashed, gaveBack, twice, unknown} {
		if err := e.pub.Publish(ctx, status.Event{ID: msgID(i), Status: status.Queued, Stage: "policy", Attempt: 1}); err != nil {
			t.Fatal(err)
		}
		e.publish(i, i+1, nil)
	}
	cons, err := e.js.Consumer(ctx, streams.Egress, streams.EgressConsumerName(pool))
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(want int) map[string]jetstream.Msg {
		t.Helper()
		b, err := cons.Fetch(want, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]jetstream.Msg{}
		for msg := range b.Messages() {
			mm, _, _, ok := s.riskOf(ctx, msg)
			if !ok {
				t.Fatalf("cannot decode %s", msg.Data())
			}
			got[mm.ID] = msg
		}
		if len(got) != want {
			t.Fatalf("fetched %d messages, want %d", len(got), want)
		}
		return got
	}
	later := 2 * time.Second
	first := fetch(4)
	if err := first[msgID(crashed)].NakWithDelay(later); err != nil {
		t.Fatal(err)
	}
	s.giveBack(ctx, lo, first[msgID(gaveBack)], nil, later, "link paused", s.log)
	if err := first[msgID(twice)].Nak(); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Publish(ctx, status.Event{ID: msgID(unknown), Status: status.SubmitUnknown, Stage: "egress", Link: link, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := first[msgID(unknown)].NakWithDelay(later); err != nil {
		t.Fatal(err)
	}
	second := fetch(1)
	s.giveBack(ctx, lo, second[msgID(twice)], nil, 0, "link paused", s.log)

	e.publish(refused, refused+1, nil)
	e.publish(throttled, throttled+1, nil)
	natstest.Run(t, wait, s.Run)
	natstest.Eventually(t, wait, "want every message accepted", func() bool { return e.acceptedEach(n) })
	natstest.Eventually(t, wait, "want SMS_EGRESS empty", func() bool { return e.streamMsgs(streams.Egress) == 0 })
	e.acceptedOnce(n)

	counted := map[string]bool{}
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, ResubmitLog) {
			for _, i := range []int{crashed, refused, gaveBack, twice, unknown, throttled} {
				if strings.Contains(line, "msg_id="+msgID(i)+" ") {
					counted[msgID(i)] = true
				}
			}
		}
	}
	want := map[string]bool{msgID(crashed): true, msgID(twice): true, msgID(unknown): true}
	if len(counted) != len(want) || !counted[msgID(crashed)] || !counted[msgID(twice)] || !counted[msgID(unknown)] {
		t.Errorf("resubmits logged as risky: %v, want %v", counted, want)
	}
	if got := testutil.ToFloat64(m.resubmitsUnknown.WithLabelValues(link)); got != 3 {
		t.Errorf("resubmits_unknown_total = %v, want 3 (crashed, crashed then given back, submit_unknown)", got)
	}
	// The give-back left its record, and the risky one's give-back none.
	backs := func(i int) (k int) {
		for _, ev := range e.events(msgID(i), status.Retry) {
			if status.IsGiveBack(ev) && ev.Attempt == 1 {
				k++
			}
		}
		return k
	}
	if backs(gaveBack) != 1 {
		t.Errorf("%s history %+v, want a retry given back on attempt 1", msgID(gaveBack), e.history(msgID(gaveBack)))
	}
	for _, ev := range e.events(msgID(twice), status.Retry) {
		t.Errorf("%s: the give-back of a risky message left a record %+v, which hides the crash before it", msgID(twice), ev)
	}
	if sub := e.events(msgID(refused), status.Submitted); len(sub) != 1 || sub[0].Attempt != 2 {
		t.Errorf("%s submitted %+v, want once on attempt 2", msgID(refused), sub)
	}
}

// After an unclean stop (runningKey left in sms_links), the first
// deliveries of a lane are checked like redeliveries: those already
// submitted (the server forgot their acks; more than a window of them) are
// acked unsent, and the next window of them is submitted and counted as
// possible duplicates. A clean stop leaves no key, and the next start
// checks none.
func TestTheFirstDeliveriesAfterAnUncleanStopAreChecked(t *testing.T) {
	const window, forgotten, n = 2, 3, 7
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	kv := e.bucket(streams.BucketLinks)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := kv.Put(ctx, runningKey, []byte("host:1")); err != nil { // a dead instance's
		t.Fatal(err)
	}
	for i := range forgotten {
		if err := e.pub.Publish(ctx, status.Event{ID: msgID(i), Status: status.Submitted, Stage: "egress", Link: link, SMSCID: fmt.Sprintf("X-%d", i), Parts: 1, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	e.publish(0, n, nil)
	r := e.run(e.linkOpts(100, 10, window), fastRetries(5))
	var sent, acked, left int
	defer func() { // which of the three a timeout is about
		if t.Failed() {
			t.Logf("last seen: %d sent (want %d), %d acked as submitted (want %d), %d left on the lane (want 0)", sent, n-forgotten, acked, forgotten, left)
		}
	}()
	natstest.Eventually(t, wait, "want the new messages sent and the submitted ones acked", func() bool {
		sent, acked, left = e.sim.Accepted(), int(r.count(r.m.redeliveredSubmitted, link)), int(e.streamMsgs(streams.Egress))
		return sent == n-forgotten && acked == forgotten && left == 0
	})
	for i := range forgotten {
		if got := e.sim.AcceptedTo(simDst(i)); got != 0 {
			t.Fatalf("%s (already submitted) was sent %d times", msgID(i), got)
		}
	}
	if got := r.count(r.m.resubmitsUnknown, link); got != window {
		t.Fatalf("resubmits_unknown_total = %v, want %d: the window of checked first deliveries that were not submitted", got, window)
	}
	r.stop()
	if _, err := kv.Get(ctx, runningKey); err == nil {
		t.Fatal("a clean stop left the running mark")
	}
	e.publish(n, n+3, nil)
	r = e.run(e.linkOpts(100, 10, window), fastRetries(5))
	natstest.Eventually(t, wait, "want the new messages sent", func() bool { return e.sim.Accepted() == n-forgotten+3 })
	if got := r.count(r.m.resubmitsUnknown, link); got != 0 {
		t.Fatalf("resubmits_unknown_total = %v after a clean stop, want 0", got)
	}
}
