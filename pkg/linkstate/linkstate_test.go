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

func TestListJoinsHealthAndControlByLink(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	if err := linkstate.PutHealth(ctx, kv, linkstate.Health{Link: "b", Bound: true, ConfiguredRate: 50, EffectiveRate: 35, Throttles: 3}); err != nil {
		t.Fatal(err)
	}
	if err := linkstate.SetPaused(ctx, kv, "a", true, "carrier outage"); err != nil {
		t.Fatal(err)
	}
	views, err := linkstate.List(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 2 || views[0].Link != "a" || views[0].Control == nil || !views[0].Control.Paused ||
		views[1].Link != "b" || !views[1].Bound || views[1].EffectiveRate != 35 || views[1].Control != nil {
		t.Fatalf("List = %+v", views)
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
