package egress

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

func TestAPausedLinkSendsNothingUntilItIsResumed(t *testing.T) {
	const n = 20
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv := e.bucket(streams.BucketLinks)
	if err := linkstate.SetPaused(ctx, kv, link, true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	e.publish(0, n, nil)
	r := e.run(e.linkOpts(100, 10, 4), fastRetries(5))

	health := func() linkstate.View {
		views, err := linkstate.List(ctx, kv, time.Now())
		for _, v := range views {
			if err == nil && v.Link == link {
				return v
			}
		}
		return linkstate.View{}
	}
	natstest.Eventually(t, wait, "want health in sms_links: bound and paused", func() bool {
		h := health()
		return h.Bound && h.Paused && h.ConfiguredRate == 100 && len(h.Instances) == 1 && h.Instances[0].Instance != ""
	})
	// Bound, paused, twenty messages waiting: give it time to misbehave.
	time.Sleep(500 * time.Millisecond)
	if got := e.sim.Accepted(); got != 0 {
		t.Fatalf("a paused link submitted %d messages", got)
	}
	if got := testutil.ToFloat64(r.m.paused.WithLabelValues(link)); got != 1 {
		t.Fatalf("link_paused = %v, want 1", got)
	}
	if err := linkstate.SetPaused(ctx, kv, link, false, ""); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "want every message sent after resume", func() bool { return e.acceptedEach(n) })
	e.acceptedOnce(n)
	natstest.Eventually(t, wait, "want health to say running again", func() bool { return !health().Paused })

	views, err := linkstate.List(ctx, kv, time.Now())
	if err != nil || len(views) != 1 || views[0].Link != link || views[0].Control == nil || views[0].Control.Paused {
		t.Fatalf("List = %+v, %v; want link l1 with a resumed control", views, err)
	}
	r.stop()
	if h := health(); h.Bound || len(h.Instances) != 0 {
		t.Fatalf("after the stage stopped, its report is still there: %+v", h)
	}
}

// A pause that comes while the workers wait in a fetch: what that fetch
// brings after the pause goes back unsent, and out once resumed.
func TestAPauseStopsWhatAFetchUnderWayBrings(t *testing.T) {
	const n = 20
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv := e.bucket(streams.BucketLinks)
	r := e.run(e.linkOpts(100, 10, 4), fastRetries(5))
	natstest.Eventually(t, wait, "want the link bound", func() bool { return testutil.ToFloat64(r.m.bound.WithLabelValues(link)) == 1 })
	time.Sleep(100 * time.Millisecond) // the workers are in their fetch, the lanes empty
	if err := linkstate.SetPaused(ctx, kv, link, true, "now"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "want the pause seen", func() bool { return testutil.ToFloat64(r.m.paused.WithLabelValues(link)) == 1 })
	e.publish(0, n, nil)
	time.Sleep(600 * time.Millisecond) // longer than a fetch waits
	if got := e.sim.Accepted(); got != 0 {
		t.Fatalf("a paused link submitted %d messages", got)
	}
	if err := linkstate.SetPaused(ctx, kv, link, false, ""); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "want every message sent after resume", func() bool { return e.acceptedEach(n) })
	e.acceptedOnce(n)
	// What went back unsent left a record of it: no submit after it counts
	// as one that may deliver twice.
	if got := r.count(r.m.resubmitsUnknown, link); got != 0 {
		t.Fatalf("resubmits_unknown_total = %v after a pause, want 0", got)
	}
	r.stop()
}

func TestMalformedControlIsIgnoredAndTheLinkKeepsRunning(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv := e.bucket(streams.BucketLinks)
	if _, err := kv.Put(ctx, linkstate.ControlKey(link), []byte("pause please")); err != nil {
		t.Fatal(err)
	}
	e.publish(0, 5, nil)
	e.run(e.linkOpts(100, 10, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want the messages sent despite the malformed control", func() bool { return e.acceptedEach(5) })
}
