package status_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/pkg/status/statustest"
	"github.com/smsflow/smsflow/streams"
)

func newPublisher(t *testing.T) *status.Publisher {
	t.Helper()
	_, _, p := statustest.Setup(t)
	return p
}

func TestAReplayedEventIsStoredOnce(t *testing.T) {
	p := newPublisher(t)
	ctx := context.Background()
	for range 3 {
		if err := p.Publish(ctx, status.Event{ID: "m1", Status: status.Queued}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Publish(ctx, status.Event{ID: "m1", Status: status.Retry, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, status.Event{ID: "m1", Status: status.Retry, Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	h, err := p.History(ctx, "m1", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].Status != status.Queued || h[2].Attempt != 2 {
		t.Fatalf("history = %+v, want queued, retry 1, retry 2", h)
	}
}

func TestOnlyTheFirstTerminalEventLands(t *testing.T) {
	p := newPublisher(t)
	ctx := context.Background()
	if err := p.Publish(ctx, status.Event{ID: "m2", Status: status.Submitted}); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, status.Event{ID: "m2", Status: status.Delivered}); err != nil {
		t.Fatal(err)
	}
	err := p.Publish(ctx, status.Event{ID: "m2", Status: status.Failed})
	if !errors.Is(err, status.ErrAlreadyFinal) {
		t.Fatalf("second terminal: err = %v, want ErrAlreadyFinal", err)
	}
	ev, err := p.Latest(ctx, "m2")
	if err != nil || ev.Status != status.Delivered {
		t.Fatalf("latest = %+v, %v; want delivered", ev, err)
	}
}

func TestATerminalEventOnANewMessageLands(t *testing.T) {
	p := newPublisher(t)
	ctx := context.Background()
	if err := p.Publish(ctx, status.Event{ID: "fresh", Status: status.Rejected, Reason: status.ReasonInvalid}); err != nil {
		t.Fatal(err)
	}
	if ev, err := p.Latest(ctx, "fresh"); err != nil || ev.Reason != status.ReasonInvalid {
		t.Fatalf("latest = %+v, %v", ev, err)
	}
}

func TestRacingTerminalEventsLeaveExactlyOne(t *testing.T) {
	p := newPublisher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const ids, racers = 20, 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	landed := map[string]int{}
	for i := range ids {
		id := "r" + string(rune('a'+i))
		for r := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := []string{status.Delivered, status.Undelivered, status.Failed, status.Expired}[r]
				err := p.Publish(ctx, status.Event{ID: id, Status: st})
				if err == nil {
					mu.Lock()
					landed[id]++
					mu.Unlock()
				} else if !errors.Is(err, status.ErrAlreadyFinal) {
					t.Errorf("publish: %v", err)
				}
			}()
		}
	}
	wg.Wait()
	for i := range ids {
		id := "r" + string(rune('a'+i))
		h, err := p.History(ctx, id, 10)
		if err != nil {
			t.Fatal(err)
		}
		if landed[id] != 1 || len(h) != 1 {
			t.Errorf("%s: %d publishes succeeded, %d events stored; want exactly 1", id, landed[id], len(h))
		}
	}
}

func TestAnUnknownMessageIsNotFound(t *testing.T) {
	p := newPublisher(t)
	if _, err := p.Latest(context.Background(), "nope"); !errors.Is(err, status.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	if _, err := p.History(context.Background(), "nope", 10); !errors.Is(err, status.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
}

// Long after the dedup window, a replayed non-terminal event must not land
// after the terminal one (else a later terminal would see it last and land
// too): the check is on the stream's content, not on Nats-Msg-Id.
func TestNothingLandsAfterATerminalEventEvenPastTheDedupWindow(t *testing.T) {
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx := context.Background()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, streams.Status)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{status.Submitted, status.Delivered} {
		if err := p.Publish(ctx, status.Event{ID: "late", Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // past the dedup window
	if err := p.Publish(ctx, status.Event{ID: "late", Status: status.Queued}); err != nil {
		t.Fatalf("a late non-terminal event: %v, want nil (dropped)", err)
	}
	if err := p.Publish(ctx, status.Event{ID: "late", Status: status.Undelivered}); !errors.Is(err, status.ErrAlreadyFinal) {
		t.Fatalf("a second terminal event past the dedup window: %v, want ErrAlreadyFinal", err)
	}
	h, err := p.History(ctx, "late", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[1].Status != status.Delivered {
		t.Fatalf("history = %+v, want submitted, delivered and nothing after", h)
	}
}

func TestALateEarlierStageEventIsDropped(t *testing.T) {
	p := newPublisher(t)
	ctx := context.Background()
	for _, st := range []string{status.Accepted, status.Retry, status.Submitted, status.Queued, status.Retry} {
		if err := p.Publish(ctx, status.Event{ID: "race", Status: st, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := p.Latest(ctx, "race")
	if err != nil || ev.Status != status.Submitted {
		t.Fatalf("latest = %+v, %v; want submitted: a late queued or retry must not hide it", ev, err)
	}
	h, _ := p.History(ctx, "race", 10)
	if len(h) != 3 {
		t.Fatalf("history = %+v, want accepted, retry, submitted", h)
	}
}
