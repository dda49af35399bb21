package linkstate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx := context.Background()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestWatchControlSeesPauseResumeAndDelete(t *testing.T) {
	kv := bucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var seen []bool
	var bad int
	done := make(chan error, 1)
	wctx, stop := context.WithCancel(ctx)
	go func() {
		done <- linkstate.WatchControl(wctx, kv, "l1", func(c linkstate.Control) {
			mu.Lock()
			seen = append(seen, c.Paused)
			mu.Unlock()
		}, func(error) { mu.Lock(); bad++; mu.Unlock() })
	}()
	steps := []func() error{
		func() error { return linkstate.SetPaused(ctx, kv, "l1", true, "maintenance") },
		func() error { _, err := kv.Put(ctx, linkstate.ControlKey("l1"), []byte("{broken")); return err },
		func() error { return linkstate.SetPaused(ctx, kv, "l1", false, "") },
		func() error { return linkstate.SetPaused(ctx, kv, "other", true, "") }, // another link: not seen
		func() error { return linkstate.SetPaused(ctx, kv, "l1", true, "") },
		func() error { return kv.Delete(ctx, linkstate.ControlKey("l1")) },
	}
	want := [][]bool{{true}, {true}, {true, false}, {true, false}, {true, false, true}, {true, false, true, false}}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		natstest.Eventually(t, 5*time.Second, "want the watcher to see the step", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(seen) == len(want[i]) && (i != 1 || bad == 1)
		})
	}
	mu.Lock()
	for i := range seen {
		if seen[i] != want[len(want)-1][i] {
			t.Fatalf("seen %v, want %v", seen, want[len(want)-1])
		}
	}
	mu.Unlock()
	stop()
	if err := <-done; err != nil {
		t.Fatalf("WatchControl returned %v after cancel, want nil", err)
	}
}

func TestListAddsUpTheInstancesOfALinkAndForgetsStaleOnes(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, h := range []linkstate.Health{
		{Link: "b", Instance: "host1:10", Bound: true, ConfiguredRate: 50, EffectiveRate: 35, Throttles: 3, UpdatedAt: now},
		{Link: "b", Instance: "host2:20", Bound: false, ConfiguredRate: 50, EffectiveRate: 50, Throttles: 1, LastError: "EOF", UpdatedAt: now},
		{Link: "b", Instance: "host3:30", Bound: true, ConfiguredRate: 50, EffectiveRate: 10, Throttles: 100, UpdatedAt: now.Add(-2 * linkstate.Stale)},
	} {
		if err := linkstate.PutHealth(ctx, kv, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := linkstate.SetPaused(ctx, kv, "a", true, "carrier outage"); err != nil {
		t.Fatal(err)
	}
	views, err := linkstate.List(ctx, kv, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 2 || views[0].Link != "a" || views[0].Control == nil || !views[0].Paused {
		t.Fatalf("views = %+v, want a paused link a first", views)
	}
	b := views[1]
	if b.Link != "b" || len(b.Instances) != 2 || !b.Bound || b.EffectiveRate != 35 || b.Throttles != 4 || b.LastError != "EOF" || b.Control != nil {
		t.Fatalf("link b = %+v; want 2 fresh instances, bound, rate 35, 4 throttles, last error EOF", b)
	}
	if err := linkstate.DeleteHealth(ctx, kv, "b", "host1:10"); err != nil {
		t.Fatal(err)
	}
	views, _ = linkstate.List(ctx, kv, now)
	if len(views[1].Instances) != 1 || views[1].Bound {
		t.Fatalf("after host1 stopped: %+v, want one unbound instance", views[1])
	}
}

func TestParseControlTreatsEmptyAsRunningAndJunkAsAnError(t *testing.T) {
	if c, err := linkstate.ParseControl(nil); err != nil || c.Paused {
		t.Fatalf("empty: %+v %v", c, err)
	}
	if _, err := linkstate.ParseControl([]byte("yes")); err == nil {
		t.Fatal("junk parsed")
	}
}
