package smpplink

import (
	"testing"
	"time"
)

// The wait before rebind attempt n+1 doubles per failure up to 32x the base,
// with jitter in [d/2, d], so links that lost the same SMSC do not come back
// in step.
func TestRebindBackoffDoublesUpToACapWithJitter(t *testing.T) {
	const base = 100 * time.Millisecond
	for failures := 1; failures <= 10; failures++ {
		d := base << min(failures-1, 5)
		lo, hi := d, time.Duration(0)
		for range 200 {
			w := backoff(base, failures)
			lo, hi = min(lo, w), max(hi, w)
		}
		if lo < d/2 || hi > d {
			t.Fatalf("failure %d: waits in [%v, %v], want within [%v, %v]", failures, lo, hi, d/2, d)
		}
		if hi-lo < d/8 {
			t.Fatalf("failure %d: 200 waits all within %v: no jitter", failures, hi-lo)
		}
	}
	if w := backoff(base, 50); w > 32*base {
		t.Fatalf("failure 50 waits %v, want at most the cap %v", w, 32*base)
	}
}
