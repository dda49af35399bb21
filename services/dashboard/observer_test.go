package dashboard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeClock is a settable clock for the observer's rate window.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

var t0 = time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)

func newTestObserver(t *testing.T, opts ObserverOptions) (*Observer, *fakeClock, *prometheus.Registry) {
	t.Helper()
	clk := &fakeClock{t: t0}
	opts.Now = clk.now
	reg := prometheus.NewRegistry()
	return NewObserver(nil, []string{"sim1", "sim2"}, opts, discard(), reg), clk, reg
}

// life sends the events of one message: accepted at 0, submitted after
// toSub, delivered toDeliv after that.
func life(o *Observer, id, link string, parts int, toSub, toDeliv time.Duration) {
	o.observe(status.Event{ID: id, Status: status.Accepted, At: t0})
	o.observe(status.Event{ID: id, Status: status.Queued, At: t0.Add(time.Millisecond)})
	o.observe(status.Event{ID: id, Status: status.Submitted, Link: link, Parts: parts, At: t0.Add(toSub)})
	o.observe(status.Event{ID: id, Status: status.Delivered, At: t0.Add(toSub + toDeliv)})
}

func TestLatencyIsMeasuredBetweenTheEventsTimestamps(t *testing.T) {
	o, _, reg := newTestObserver(t, ObserverOptions{Prices: map[string]float64{"sim1": 0.05, "sim2": 0.5}})
	life(o, "a", "sim1", 1, 2*time.Second, 3*time.Second)
	life(o, "b", "sim1", 3, 4*time.Second, 1*time.Second)
	life(o, "c", "sim2", 1, 6*time.Second, 2*time.Second)

	if got := testutil.CollectAndCount(reg, "smsflow_status_accepted_to_submitted_seconds"); got != 1 {
		t.Fatalf("histogram series = %d, want 1", got)
	}
	snap := o.Snapshot()
	if snap.ToSub.Samples != 3 || snap.ToSub.AvgMs != 4000 || snap.ToSub.P99Ms != 6000 {
		t.Errorf("accepted→submitted = %v, want 3 samples, avg 4000 ms, p99 6000 ms", snap.ToSub)
	}
	if snap.ToDeliv.Samples != 3 || snap.ToDeliv.AvgMs != 2000 || snap.ToDeliv.P99Ms != 3000 {
		t.Errorf("submitted→delivered = %v, want 3 samples, avg 2000 ms, p99 3000 ms", snap.ToDeliv)
	}
	wantHist := func(name string, count uint64, sum float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				h := mf.GetMetric()[0].GetHistogram()
				if h.GetSampleCount() != count || math.Abs(h.GetSampleSum()-sum) > 1e-9 {
					t.Errorf("%s: count %d sum %v, want %d and %v", name, h.GetSampleCount(), h.GetSampleSum(), count, sum)
				}
				return
			}
		}
		t.Errorf("%s not gathered", name)
	}
	wantHist("smsflow_status_accepted_to_submitted_seconds", 3, 12)
	wantHist("smsflow_status_submitted_to_delivered_seconds", 3, 6)

	if got := testutil.ToFloat64(o.m.parts.WithLabelValues("sim1")); got != 4 {
		t.Errorf("parts on sim1 = %v, want 4", got)
	}
	if got := testutil.ToFloat64(o.m.cost.WithLabelValues("sim2")); got != 0.5 {
		t.Errorf("cost on sim2 = %v, want 0.5", got)
	}
	if snap.Parts["sim1"] != 4 || math.Abs(snap.Cost["sim1"]-0.2) > 1e-12 {
		t.Errorf("snapshot sim1: %d parts cost %v, want 4 parts cost 0.2", snap.Parts["sim1"], snap.Cost["sim1"])
	}
	if got := testutil.ToFloat64(o.m.events.WithLabelValues(status.Delivered)); got != 3 {
		t.Errorf("delivered events = %v, want 3", got)
	}
	if snap.Tracked != 0 || testutil.ToFloat64(o.m.tracked) != 0 {
		t.Errorf("tracked = %d (gauge %v) after every message ended, want 0", snap.Tracked, testutil.ToFloat64(o.m.tracked))
	}
}

func TestARepeatedSubmittedOrAMissedAcceptedIsNoSample(t *testing.T) {
	o, _, _ := newTestObserver(t, ObserverOptions{})
	life(o, "a", "sim1", 1, time.Second, time.Second)
	// A second "submitted" (a redelivery found the message submitted) after
	// the first: not a second sample, still counted as an event.
	o.observe(status.Event{ID: "b", Status: status.Accepted, At: t0})
	o.observe(status.Event{ID: "b", Status: status.Submitted, Link: "sim1", At: t0.Add(time.Second)})
	o.observe(status.Event{ID: "b", Status: status.Submitted, Link: "sim1", At: t0.Add(9 * time.Second)})
	// A message whose accepted event came before the observer started.
	o.observe(status.Event{ID: "c", Status: status.Submitted, Link: "elsewhere", At: t0.Add(time.Second)})
	o.observe(status.Event{ID: "c", Status: status.Undelivered, At: t0.Add(2 * time.Second)})

	snap := o.Snapshot()
	if snap.ToSub.Samples != 2 || snap.ToSub.AvgMs != 1000 {
		t.Errorf("accepted→submitted = %v, want 2 samples of 1000 ms", snap.ToSub)
	}
	if snap.ToDeliv.Samples != 1 {
		t.Errorf("submitted→delivered = %v, want 1 sample", snap.ToDeliv)
	}
	if snap.Counts[status.Submitted] != 4 || snap.Counts[status.Undelivered] != 1 {
		t.Errorf("counts = %v, want 4 submitted, 1 undelivered", snap.Counts)
	}
	if got := testutil.ToFloat64(o.m.parts.WithLabelValues(otherLink)); got != 1 {
		t.Errorf("parts of an unconfigured link under %q = %v, want 1", otherLink, got)
	}
	if snap.Tracked != 1 { // b has not ended
		t.Errorf("tracked = %d, want 1 (b)", snap.Tracked)
	}
}

func TestTrackingIsBoundedAndDropsTheOldest(t *testing.T) {
	o, _, _ := newTestObserver(t, ObserverOptions{MaxTrack: 3})
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		o.observe(status.Event{ID: id, Status: status.Accepted, At: t0})
	}
	if got := testutil.ToFloat64(o.m.evicted); got != 2 {
		t.Fatalf("evicted = %v, want 2 (a and b)", got)
	}
	if got := testutil.ToFloat64(o.m.tracked); got != 3 {
		t.Fatalf("tracked = %v, want 3", got)
	}
	// a was dropped: its submit has no accepted time, so no sample; e was kept.
	o.observe(status.Event{ID: "a", Status: status.Submitted, Link: "sim1", At: t0.Add(time.Second)})
	o.observe(status.Event{ID: "e", Status: status.Submitted, Link: "sim1", At: t0.Add(time.Second)})
	if s := o.Snapshot().ToSub; s.Samples != 1 {
		t.Fatalf("samples = %d, want 1 (e only)", s.Samples)
	}
	// a's submitted entry pushed out c: still 3 tracked, 3 evicted in all.
	if got := testutil.ToFloat64(o.m.evicted); got != 3 {
		t.Fatalf("evicted = %v, want 3", got)
	}
	// Many short lives keep the order queue compact.
	for i := range 1000 {
		id := string(rune('A'+i%26)) + string(rune('a'+i/26))
		o.observe(status.Event{ID: id, Status: status.Accepted, At: t0})
		o.observe(status.Event{ID: id, Status: status.Rejected, At: t0})
	}
	if n := len(o.track.order); n > 2*3+16+1 {
		t.Fatalf("order queue holds %d ids for 3 tracked, want it compacted", n)
	}
}

func TestRatesAverageTheLastWholeSeconds(t *testing.T) {
	o, clk, _ := newTestObserver(t, ObserverOptions{})
	// Seconds 0..6: 10 accepted each second, and 5 parts on sim1 in second 6.
	for s := range 7 {
		clk.t = t0.Add(time.Duration(s)*time.Second + 500*time.Millisecond)
		for i := range 10 {
			o.observe(status.Event{ID: "x", Status: status.Accepted, At: clk.t, Attempt: i})
		}
	}
	for range 5 {
		o.observe(status.Event{ID: "y", Status: status.Submitted, Link: "sim1", At: clk.t})
	}
	// In second 6, the window is seconds 1..5: 10/s; sim1's parts are in
	// the current second, not counted yet.
	r := o.Snapshot().Rates
	if r[status.Accepted] != 10 || r[partsKey("sim1")] != 0 {
		t.Fatalf("rates at 6.5 s = %v, want accepted 10, parts.sim1 0", r)
	}
	clk.t = t0.Add(7 * time.Second)
	r = o.Snapshot().Rates
	if r[status.Accepted] != 10 || r[partsKey("sim1")] != 1 {
		t.Fatalf("rates at 7 s = %v, want accepted 10, parts.sim1 1 (5 parts / 5 s)", r)
	}
	// Ten quiet seconds later, nothing is left in the window.
	clk.t = t0.Add(17 * time.Second)
	if r = o.Snapshot().Rates; len(r) != 0 {
		t.Fatalf("rates after 10 quiet seconds = %v, want none", r)
	}
}

func TestSamplesSummaryIsNearestRankP99(t *testing.T) {
	s := newSamples(100)
	for i := 100; i >= 1; i-- {
		s.add(float64(i) / 1000) // 1..100 ms
	}
	if got := s.summary(); got.Samples != 100 || got.AvgMs != 50.5 || got.P99Ms != 99 {
		t.Fatalf("summary = %v, want 100 samples, avg 50.5 ms, p99 99 ms", got)
	}
	s.add(1) // the ring drops the oldest (100 ms) for a 1,000 ms sample
	if got := s.summary(); got.Samples != 100 || got.P99Ms != 99 || got.AvgMs != 59.5 {
		t.Fatalf("summary after wrap = %v, want 100 samples, avg 59.5 ms, p99 99 ms", got)
	}
	if got := newSamples(5).summary(); got != (Latency{}) {
		t.Fatalf("empty summary = %v, want zero", got)
	}
}

// TestRunFollowsTheStatusStreamFromItsCreation publishes real events: those
// from before NewObserver are not counted, those between NewObserver and Run
// are, and a body that is not an event is counted as such and skipped.
func TestRunFollowsTheStatusStreamFromItsCreation(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatal(err)
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(id string, statuses ...string) {
		t.Helper()
		for _, st := range statuses {
			if err := pub.Publish(ctx, status.Event{ID: id, Status: st, Link: "sim1", Parts: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish("before", status.Accepted, status.Queued)
	// The server stamped "before" when it stored it, before Publish returned:
	// earlier than the observer's start.
	reg := prometheus.NewRegistry()
	o := NewObserver(js, []string{"sim1"}, ObserverOptions{}, discard(), reg)
	for i := range 10 {
		publish("m"+string(rune('0'+i)), status.Accepted, status.Queued, status.Submitted, status.Delivered)
	}
	if _, err := js.Publish(ctx, "sms.status.junk", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	stop := natstest.Run(t, 10*time.Second, o.Run)
	defer stop()
	natstest.Eventually(t, 10*time.Second, "want 10 delivered and 1 undecodable", func() bool {
		return testutil.ToFloat64(o.m.events.WithLabelValues(status.Delivered)) == 10 && testutil.ToFloat64(o.m.undecoded) == 1
	})
	for i := range 5 { // events after Run started
		publish("n"+string(rune('0'+i)), status.Accepted, status.Rejected)
	}
	natstest.Eventually(t, 10*time.Second, "want 5 rejected", func() bool {
		return testutil.ToFloat64(o.m.events.WithLabelValues(status.Rejected)) == 5
	})
	snap := o.Snapshot()
	want := map[string]int64{status.Accepted: 15, status.Queued: 10, status.Submitted: 10, status.Delivered: 10, status.Rejected: 5}
	for st, n := range want {
		if snap.Counts[st] != n {
			t.Errorf("count %s = %d, want %d (the message from before NewObserver must not count)", st, snap.Counts[st], n)
		}
	}
	if snap.ToSub.Samples != 10 || snap.ToDeliv.Samples != 10 || snap.Tracked != 0 {
		t.Errorf("samples %d and %d, tracked %d; want 10, 10, 0", snap.ToSub.Samples, snap.ToDeliv.Samples, snap.Tracked)
	}
}

func TestSubmitResultsAreCountedByLinkAndCommandStatus(t *testing.T) {
	o, _, reg := newTestObserver(t, ObserverOptions{})
	ev := func(id, st, reason string, code int) {
		o.observe(status.Event{ID: id, Status: st, Reason: reason, Link: "sim1", Code: code, At: t0})
	}
	ev("a", status.Accepted, "", 0)
	ev("a", status.Throttled, "", 0x58)
	ev("a", status.Retry, "", 0) // timeout: no answer
	ev("a", status.SubmitUnknown, "", 0)
	ev("a", status.Submitted, "", 0)
	ev("b", status.Accepted, "", 0)
	ev("b", status.Failed, status.ReasonPermanent, 0x0b) // ESME_RINVDSTADR
	ev("c", status.Accepted, "", 0)
	ev("c", status.Failed, status.ReasonMaxAttempts, 0) // no submit: not a result
	// A give-back (link paused) made no submit: not a result either.
	o.observe(status.Event{ID: "e", Status: status.Retry, Stage: "egress", Link: "sim1", Detail: status.GivenBack + "link paused", At: t0})
	want := `
# HELP smsflow_status_submit_results_total submit_sm outcomes in status events (submitted, throttled, retry, submit_unknown, failed permanent), by link and SMPP command_status: 0x00000000 accepted, none when the SMSC never answered, other past 32 distinct codes.
# TYPE smsflow_status_submit_results_total counter
smsflow_status_submit_results_total{command_status="0x00000000",link="other"} 0
smsflow_status_submit_results_total{command_status="0x00000000",link="sim1"} 1
smsflow_status_submit_results_total{command_status="0x00000000",link="sim2"} 0
smsflow_status_submit_results_total{command_status="0x0000000b",link="sim1"} 1
smsflow_status_submit_results_total{command_status="0x00000058",link="other"} 0
smsflow_status_submit_results_total{command_status="0x00000058",link="sim1"} 1
smsflow_status_submit_results_total{command_status="0x00000058",link="sim2"} 0
smsflow_status_submit_results_total{command_status="none",link="other"} 0
smsflow_status_submit_results_total{command_status="none",link="sim1"} 2
smsflow_status_submit_results_total{command_status="none",link="sim2"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "smsflow_status_submit_results_total"); err != nil {
		t.Fatal(err)
	}
	if n := o.Snapshot().Tracked; n != 1 { // a is submitted, not final; b and c ended
		t.Fatalf("tracked = %d, want 1: a permanent failure ends tracking too", n)
	}
	// An SMSC inventing codes: past maxCodes distinct values, they share "other".
	for code := 0x100; code < 0x100+2*maxCodes; code++ {
		ev("d", status.Retry, "", code)
	}
	if got := testutil.ToFloat64(o.m.submits.WithLabelValues("sim1", codeOther)); got != float64(2*maxCodes-(maxCodes-4)) {
		t.Fatalf("results under %q = %v, want %d", codeOther, got, 2*maxCodes-(maxCodes-4))
	}
	if n := testutil.CollectAndCount(o.m.submits); n > 3*(maxCodes+1) {
		t.Fatalf("%d series: the command_status label is not bounded", n)
	}
}

// BenchmarkObserve is the cost of one message's four events (accepted,
// queued, submitted, delivered) in the observer.
func BenchmarkObserve(b *testing.B) {
	o := NewObserver(nil, []string{"sim1"}, ObserverOptions{}, discard(), prometheus.NewRegistry())
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "msg-" + strings.Repeat("x", 20) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := ids[i%len(ids)]
		o.observe(status.Event{ID: id, Status: status.Accepted, At: t0})
		o.observe(status.Event{ID: id, Status: status.Queued, At: t0})
		o.observe(status.Event{ID: id, Status: status.Submitted, Link: "sim1", Parts: 1, At: t0.Add(time.Second)})
		o.observe(status.Event{ID: id, Status: status.Delivered, At: t0.Add(2 * time.Second)})
	}
}

// TestTheObserverSurvivesANATSRestart stops the server under a running
// observer and starts it again on the same port and store: every event is
// counted once, those from before the restart and those after.
func TestTheObserverSurvivesANATSRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv := natstest.RunServer(t, dir)
	port := srv.Addr().(*net.TCPAddr).Port
	_, js := natstest.Connect(t, srv)
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatal(err)
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			for _, st := range []string{status.Accepted, status.Submitted, status.Delivered} {
				natstest.Eventually(t, 10*time.Second, "want "+id+" "+st+" published", func() bool {
					return pub.Publish(ctx, status.Event{ID: id, Status: st, Link: "sim1"}) == nil
				})
			}
		}
	}
	o := NewObserver(js, []string{"sim1"}, ObserverOptions{}, discard(), prometheus.NewRegistry())
	stop := natstest.Run(t, 10*time.Second, o.Run)
	defer stop()
	delivered := func() float64 { return testutil.ToFloat64(o.m.events.WithLabelValues(status.Delivered)) }

	publish("before", 20)
	natstest.Eventually(t, 10*time.Second, "want 20 delivered before the restart", func() bool { return delivered() == 20 })
	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.RunServerOnPort(t, dir, port)
	publish("after", 30)
	natstest.Eventually(t, 20*time.Second, "want 50 delivered after the restart", func() bool { return delivered() == 50 })
	snap := o.Snapshot()
	if snap.Counts[status.Accepted] != 50 || snap.Counts[status.Submitted] != 50 || snap.ToDeliv.Samples != 50 {
		t.Fatalf("counts %v, %d delivery samples; want exactly 50 of each (no event lost or counted twice)", snap.Counts, snap.ToDeliv.Samples)
	}
}

// A scheduled message's wait for its send_at is not latency: the clock
// starts again at its release, and the release is an event like any other.
func TestAScheduledMessageIsTimedFromItsRelease(t *testing.T) {
	o, _, _ := newTestObserver(t, ObserverOptions{})
	o.observe(status.Event{ID: "s", Status: status.Accepted, At: t0})
	o.observe(status.Event{ID: "s", Status: status.Scheduled, At: t0.Add(time.Millisecond)})
	o.observe(status.Event{ID: "s", Status: status.Released, At: t0.Add(time.Hour)})
	o.observe(status.Event{ID: "s", Status: status.Submitted, Link: "sim1", At: t0.Add(time.Hour + 2*time.Second)})
	snap := o.Snapshot()
	if snap.ToSub.Samples != 1 || snap.ToSub.AvgMs != 2000 {
		t.Errorf("accepted→submitted = %v, want 1 sample of 2000 ms (from the release)", snap.ToSub)
	}
	if snap.Counts[status.Released] != 1 {
		t.Errorf("counts = %v, want 1 released", snap.Counts)
	}
	if got := testutil.ToFloat64(o.m.undecoded); got != 0 {
		t.Errorf("undecodable events = %v, want 0 (released is a known event)", got)
	}
}
