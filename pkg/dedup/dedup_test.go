package dedup_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/dedup"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, _ := bucketConn(t)
	return kv
}

// bucketConn is the bucket and the connection its JetStream uses, for
// WriteVia.
func bucketConn(t *testing.T) (jetstream.KeyValue, *nats.Conn) {
	return natstest.Bucket(t, streams.BucketDedup)
}

func claim(t *testing.T, w *dedup.Window, number, text, id string) string {
	t.Helper()
	owner, err := w.Claim(context.Background(), number, text, id)
	if err != nil {
		t.Fatalf("Claim(%s, %q, %s): %v", number, text, id, err)
	}
	return owner
}

func TestTheSameTextToTheSameNumberIsADuplicateWhateverItsID(t *testing.T) {
	w := dedup.New(bucket(t), time.Minute)
	const n = "+420600000001"
	if o := claim(t, w, n, "Sale today", "a"); o != "" {
		t.Fatalf("first claim: held by %q, want free", o)
	}
	for _, tc := range []struct {
		name, number, text, id, want string
	}{
		{"the same id again is a redelivery, not a duplicate", n, "Sale today", "a", ""},
		{"another id with the same text to the same number is a duplicate of the first", n, "Sale today", "b", "a"},
		{"the same text to another number is not a duplicate", "+420600000002", "Sale today", "c", ""},
		{"another text to the same number is not a duplicate", n, "Sale tomorrow", "d", ""},
		{"text differing only in case is another text", n, "sale today", "e", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if o := claim(t, w, tc.number, tc.text, tc.id); o != tc.want {
				t.Fatalf("Claim = held by %q, want %q", o, tc.want)
			}
		})
	}
	if h, err := w.Holder(context.Background(), n, "Sale today"); err != nil || h != "a" {
		t.Fatalf("Holder = %q, %v; want a", h, err)
	}
}

func TestAClaimEndsWithTheWindow(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("WriteVia=%v", direct), func(t *testing.T) { testAClaimEndsWithTheWindow(t, direct) })
	}
}

// testAClaimEndsWithTheWindow: with WriteVia, the claim after the window
// meets the expired claim's marker, which the direct write cannot step over.
func testAClaimEndsWithTheWindow(t *testing.T, direct bool) {
	kv, nc := bucketConn(t)
	w := dedup.New(kv, time.Second)
	if direct {
		w.WriteVia(nc)
	}
	const n = "+420600000001"
	if o := claim(t, w, n, "hi", "a"); o != "" {
		t.Fatalf("first claim held by %q", o)
	}
	if o := claim(t, w, n, "hi", "b"); o != "a" {
		t.Fatalf("inside the window: held by %q, want a", o)
	}
	natstest.Eventually(t, 10*time.Second, "the claim of a expires after its 1s window", func() bool {
		h, err := w.Holder(context.Background(), n, "hi")
		return err == nil && h == ""
	})
	if o := claim(t, w, n, "hi", "c"); o != "" {
		t.Fatalf("after the window: held by %q, want free", o)
	}
}

func TestOnlyOneOfManyRacingClaimsWins(t *testing.T) {
	kv, nc := bucketConn(t)
	const racers, each = 4, 25
	var mu sync.Mutex
	free := 0
	var wg sync.WaitGroup
	for i := range racers {
		w := dedup.New(kv, time.Minute) // one per instance
		if i%2 == 1 {
			w.WriteVia(nc) // half of them write straight to the subject
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				o, err := w.Claim(context.Background(), "+420600000001", "same", fmt.Sprintf("r%d-%d", i, j))
				if err != nil {
					t.Error(err)
					return
				}
				if o == "" {
					mu.Lock()
					free++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if free != 1 {
		t.Fatalf("%d of %d claims found the pair free, want exactly 1", free, racers*each)
	}
}

func TestAZeroWindowIsOff(t *testing.T) {
	w := dedup.New(bucket(t), 0)
	for i := range 3 {
		if o := claim(t, w, "+420600000001", "hi", fmt.Sprint(i)); o != "" {
			t.Fatalf("claim %d held by %q with the window off", i, o)
		}
	}
}
