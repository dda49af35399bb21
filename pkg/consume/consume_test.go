package consume_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/natstest"
)

func setup(t *testing.T) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, "T", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return js, c
}

func TestEveryOutcomeIsCarriedOut(t *testing.T) {
	js, c := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 60 {
		if _, err := js.Publish(ctx, "t.x", []byte(fmt.Sprint(i%3))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	done := make(chan error, 1)
	go func() {
		done <- consume.Run(ctx, c, func(ctx context.Context, m jetstream.Msg) consume.Outcome {
			mu.Lock()
			defer mu.Unlock()
			kind := string(m.Data())
			seen[kind]++
			md, _ := m.Metadata()
			switch {
			case kind == "0":
				return consume.Ack()
			case kind == "1" && md.NumDelivered == 1:
				return consume.Retry(10 * time.Millisecond)
			case kind == "1":
				return consume.Ack()
			default:
				return consume.Term("poison")
			}
		}, consume.Options{Batch: 16, MaxWait: 100 * time.Millisecond})
	}()
	natstest.Eventually(t, 10*time.Second, "want 20 acked, 20 retried once then acked, 20 terminated", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["0"] == 20 && seen["1"] == 40 && seen["2"] == 20
	})
	natstest.Eventually(t, 5*time.Second, "want no message left pending", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestShutdownFinishesTheMessageInHandAndReturnsTheRest(t *testing.T) {
	js, c := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 10 {
		if _, err := js.Publish(context.Background(), "t.x", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	started := make(chan struct{})
	var finished atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- consume.Run(ctx, c, func(hctx context.Context, m jetstream.Msg) consume.Outcome {
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done() // hold the message until shutdown begins
			if hctx.Err() != nil {
				t.Error("handler context cancelled before the grace period")
			}
			finished.Add(1)
			return consume.Ack()
		}, consume.Options{Batch: 10, Concurrency: 1, MaxWait: 100 * time.Millisecond, Grace: 5 * time.Second})
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10s after cancel")
	}
	if finished.Load() != 1 {
		t.Fatalf("finished %d messages, want exactly the one in hand", finished.Load())
	}
	// The nine not started were naked: the next run gets them at once, not
	// after the 30 s ack wait. The one in hand was acked.
	got := map[string]bool{}
	natstest.Eventually(t, 5*time.Second, "want the 9 unstarted messages redelivered at once", func() bool {
		b, err := c.Fetch(10, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return false
		}
		for m := range b.Messages() {
			got[string(m.Data())] = true
			_ = m.Ack()
		}
		return len(got) == 9
	})
	if got["0"] {
		t.Fatal("the message finished before shutdown was delivered again")
	}
}

func TestBackoffGrowsIsCappedAndJittered(t *testing.T) {
	min, max := 100*time.Millisecond, time.Second
	for _, tc := range []struct {
		n      uint64
		j      float64
		want   time.Duration
		reason string
	}{
		{1, 0.999999, min + time.Duration(0.999999*0), "the first retry waits the minimum"},
		{2, 1 - 1e-9, 200 * time.Millisecond, "the second may wait up to twice the minimum"},
		{3, 0, min, "no jitter draw means the minimum"},
		{50, 1 - 1e-9, max, "late retries are capped"},
	} {
		got := consume.BackoffN(tc.n, min, max, tc.j)
		if d := got - tc.want; d > time.Microsecond || d < -time.Microsecond {
			t.Errorf("%s: BackoffN(%d, j=%v) = %v, want %v", tc.reason, tc.n, tc.j, got, tc.want)
		}
	}
}

func TestAPanickingHandlerTerminatesTheMessageAndRunGoesOn(t *testing.T) {
	js, c := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, b := range []string{"boom", "fine"} {
		if _, err := js.Publish(ctx, "t.x", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	var fine atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- consume.Run(ctx, c, func(_ context.Context, m jetstream.Msg) consume.Outcome {
			if string(m.Data()) == "boom" {
				panic("handler bug")
			}
			fine.Add(1)
			return consume.Ack()
		}, consume.Options{MaxWait: 100 * time.Millisecond})
	}()
	natstest.Eventually(t, 5*time.Second, "want the good message handled after the panic", func() bool { return fine.Load() == 1 })
	natstest.Eventually(t, 5*time.Second, "want nothing left pending: the panicking message terminated", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
