package statusindex

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/pkg/status/statustest"
	"github.com/smsflow/smsflow/streams"
)

// fate is what the campaign test makes of message i: its statuses in order.
func fate(i int) []string {
	switch i % 20 {
	case 0:
		return []string{status.Accepted, status.Rejected}
	case 1:
		return []string{status.Accepted, status.Queued, status.Retry, status.Failed}
	case 2:
		return []string{status.Accepted, status.Queued, status.Submitted, status.Expired}
	case 3, 4:
		return []string{status.Accepted, status.Queued, status.Submitted, status.Undelivered}
	case 5:
		return []string{status.Accepted, status.Queued, status.Submitted} // no receipt yet
	case 6:
		return []string{status.Accepted, status.Queued} // still waiting for a link
	default:
		return []string{status.Accepted, status.Queued, status.Throttled, status.Submitted, status.Delivered}
	}
}

func campaignCounts(t *testing.T, js jetstream.JetStream, campaign string) status.CampaignCounts {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.Counts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := status.Counts(context.Background(), s, campaign)
	if err != nil && err != status.ErrNoCampaign {
		t.Fatal(err)
	}
	return c
}

// A campaign of 2,000 messages ends with exact counts per latest status,
// although its indexer is killed mid-run (its connection closed, events
// unacked) and two instances finish the job.
func TestACampaignOf2000CountsExactlyThroughAKilledIndexer(t *testing.T) {
	srv, js, pub := statustest.Setup(t)
	ctx := context.Background()
	statustest.QuickRedelivery(t, js, streams.ConsumerStatus)

	const n = 2000
	want := map[string]int64{}
	events := 0
	for i := range n {
		id := fmt.Sprintf("c-%04d", i)
		var last string
		for _, st := range fate(i) {
			ev := status.Event{ID: id, Status: st, Attempt: 1}
			if st == status.Accepted || st == status.Queued {
				ev.Campaign = "bf-2026" // as policy does; egress's and receipts' events may lack it
			}
			if err := pub.Publish(ctx, ev); err != nil {
				t.Fatal(err)
			}
			events++
			if status.IsStatus(st) {
				last = st
			}
		}
		want[last]++
	}
	// A message of another campaign, and one of none: counted apart, or not.
	for _, ev := range []status.Event{{ID: "other-1", Status: status.Accepted, Campaign: "other campaign/é"}, {ID: "solo", Status: status.Accepted}} {
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}

	// First instance, on its own connection; killed after a few hundred events.
	nc1, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js1, _ := jetstream.New(nc1)
	m1 := NewMetrics(prometheus.NewRegistry())
	s1 := New(js1, statustest.Publisher(t, js1), Options{Grace: time.Second}, slog.New(slog.DiscardHandler), m1)
	stop1 := natstest.Run(t, 10*time.Second, s1.Run)
	natstest.Eventually(t, 20*time.Second, "first indexer indexes 500 events", func() bool {
		return testutil.ToFloat64(m1.events.WithLabelValues("indexed")) >= 500
	})
	nc1.Close() // killed: whatever it held is unacked and comes back
	stop1()
	if got := campaignCounts(t, js, "bf-2026"); got.Total == n && got.Terminal == want[status.Rejected]+want[status.Failed]+want[status.Expired]+want[status.Undelivered]+want[status.Delivered] {
		t.Fatalf("the first indexer finished before it was killed (%+v): the test proves nothing", got)
	}

	// Two instances finish.
	m2 := NewMetrics(prometheus.NewRegistry())
	for range 2 {
		s := New(js, pub, Options{}, slog.New(slog.DiscardHandler), m2)
		natstest.Run(t, 10*time.Second, s.Run)
	}
	var got status.CampaignCounts
	// Bounded generously: under -race on two busy cores the indexers have
	// managed only ~200 events/s, and there are 8,800.
	deadline := time.Now().Add(2 * time.Minute)
	for got = campaignCounts(t, js, "bf-2026"); got.Total != n || !maps.Equal(got.Counts, want); got = campaignCounts(t, js, "bf-2026") {
		if time.Now().After(deadline) {
			cons, _ := js.Consumer(ctx, streams.Status, streams.ConsumerStatus)
			info, _ := cons.Info(ctx)
			t.Fatalf("after 2m: campaign counts %+v, want total %d and %v; consumer pending %d ack pending %d; metrics %v %v %v %v", got, n, want, info.NumPending, info.NumAckPending,
				testutil.ToFloat64(m2.events.WithLabelValues("indexed")), testutil.ToFloat64(m2.events.WithLabelValues("replayed")), testutil.ToFloat64(m2.events.WithLabelValues("stale")), testutil.ToFloat64(m2.events.WithLabelValues("error")))
		}
		time.Sleep(20 * time.Millisecond)
	}
	terminal := want[status.Rejected] + want[status.Failed] + want[status.Expired] + want[status.Undelivered] + want[status.Delivered]
	if got.Terminal != terminal || got.Progress != float64(terminal)/n {
		t.Fatalf("terminal %d progress %v, want %d and %v", got.Terminal, got.Progress, terminal, float64(terminal)/n)
	}
	// Settled: nothing more lands (a late double count would show here).
	cons, _ := js.Consumer(ctx, streams.Status, streams.ConsumerStatus)
	natstest.Eventually(t, 20*time.Second, "the indexer consumer has nothing pending", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	if again := campaignCounts(t, js, "bf-2026"); !maps.Equal(again.Counts, want) || again.Total != n {
		t.Fatalf("after settling: %+v, want total %d and %v", again, n, want)
	}
	t.Logf("counts %v over %d events; first instance indexed %v, replays after the kill %v, stale %v", got.Counts, events,
		testutil.ToFloat64(m1.events.WithLabelValues("indexed")), testutil.ToFloat64(m2.events.WithLabelValues("replayed")),
		testutil.ToFloat64(m2.events.WithLabelValues("stale")))

	if o := campaignCounts(t, js, "other campaign/é"); o.Total != 1 || o.Counts[status.Accepted] != 1 {
		t.Fatalf("other campaign = %+v, want 1 accepted", o)
	}
	// KV sms_status holds each message's latest status as its event JSON.
	kv, err := js.KeyValue(ctx, streams.BucketStatus)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 5, 6, 7, 1999} {
		e, err := kv.Get(ctx, fmt.Sprintf("c-%04d", i))
		if err != nil {
			t.Fatal(err)
		}
		var ev status.Event
		if err := json.Unmarshal(e.Value(), &ev); err != nil {
			t.Fatal(err)
		}
		f := fate(i)
		if wantSt := f[len(f)-1]; ev.Status != wantSt || ev.Campaign != "bf-2026" {
			t.Errorf("sms_status c-%04d = %s in %q, want %s in bf-2026", i, ev.Status, ev.Campaign, wantSt)
		}
	}
	if e, err := kv.Get(ctx, "solo"); err != nil || e == nil {
		t.Errorf("a message with no campaign is indexed too: %v", err)
	}
}

// The same event applied twice, or an older one after a newer one, changes
// nothing; a writer that died between its KV write and its counts is counted
// by whoever replaces its entry.
func TestApplyIsIdempotentAndOrderSafe(t *testing.T) {
	_, js, pub := statustest.Setup(t)
	ctx := context.Background()
	s := New(js, pub, Options{}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err := s.bind(ctx); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		seq    uint64
		st     string
		result string
	}{
		{10, status.Accepted, "indexed"},
		{10, status.Accepted, "replayed"},
		{30, status.Submitted, "indexed"},
		{20, status.Queued, "stale"},
		{30, status.Submitted, "replayed"},
	}
	for _, st := range steps {
		got, err := s.apply(ctx, st.seq, status.Event{ID: "m", Status: st.st, Campaign: "c"})
		if err != nil || got != st.result {
			t.Fatalf("apply %d %s = %q, %v; want %q", st.seq, st.st, got, err, st.result)
		}
	}
	if c := campaignCounts(t, js, "c"); c.Total != 1 || !maps.Equal(c.Counts, map[string]int64{status.Submitted: 1}) {
		t.Fatalf("counts = %+v, want total 1, submitted 1", c)
	}

	// A writer that wrote "queued" for n2 and died before counting it.
	m := &nats.Msg{Subject: kvSubject("n2"), Header: nats.Header{}, Data: []byte(`{"id":"n2","status":"queued","campaign":"c"}`)}
	m.Header.Set(HeaderSeq, "40")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got, err := s.apply(ctx, 50, status.Event{ID: "n2", Status: status.Delivered}); err != nil || got != "indexed" {
		t.Fatalf("apply = %q, %v", got, err)
	}
	want := map[string]int64{status.Submitted: 1, status.Delivered: 1}
	if c := campaignCounts(t, js, "c"); c.Total != 2 || !maps.Equal(c.Counts, want) || c.Terminal != 1 || c.Progress != 0.5 {
		t.Fatalf("counts = %+v, want total 2, %v, terminal 1, progress 0.5", c, want)
	}
}

func TestMetricsLint(t *testing.T) {
	statustest.LintMetrics(t, func(reg prometheus.Registerer) { NewMetrics(reg) })
}

// A receipt hours after its message's "submitted" moves the message once:
// the old entry's adds are not sent again, since past the duplicate window of
// SMS_COUNTS the stream would no longer drop them.
func TestAnOldEntryIsNotCountedAgain(t *testing.T) {
	_, js, pub := statustest.Setup(t)
	ctx := context.Background()
	cs, err := js.Stream(ctx, streams.Counts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cs.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond // an hour, shrunk
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s := New(js, pub, Options{}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err := s.bind(ctx); err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		seq uint64
		st  string
	}{{1, status.Accepted}, {2, status.Queued}, {3, status.Submitted}} {
		if _, err := s.apply(ctx, st.seq, status.Event{ID: "slow", Status: st.st, Campaign: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the receipt comes "hours" later
	if got, err := s.apply(ctx, 4, status.Event{ID: "slow", Status: status.Delivered}); err != nil || got != "indexed" {
		t.Fatalf("apply = %q, %v", got, err)
	}
	if got, err := s.apply(ctx, 4, status.Event{ID: "slow", Status: status.Delivered}); err != nil || got != "replayed" {
		t.Fatalf("replay = %q, %v", got, err)
	}
	if c := campaignCounts(t, js, "c"); c.Total != 1 || !maps.Equal(c.Counts, map[string]int64{status.Delivered: 1}) {
		t.Fatalf("counts = %+v, want total 1, delivered 1", c)
	}
}
