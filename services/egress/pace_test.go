package egress

import (
	"testing"
	"time"
)

func TestPaceHalvesOnAThrottleOncePerSecondAndRecoversOnSuccess(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newPace(20, 1)
	p.throttled(t0)
	if p.rate() != 10 {
		t.Fatalf("rate after a throttle = %v, want 10", p.rate())
	}
	p.throttled(t0.Add(500 * time.Millisecond)) // the same overrun, reported by another submit
	if p.rate() != 10 {
		t.Fatalf("rate after a second throttle within a second = %v, want still 10", p.rate())
	}
	for i := range 5 {
		p.throttled(t0.Add(time.Duration(i+1) * time.Second))
	}
	if p.rate() != 1 {
		t.Fatalf("rate after throttles every second = %v, want the floor of 1", p.rate())
	}
	now := t0.Add(10 * time.Second)
	for range 1000 {
		now = now.Add(10 * time.Millisecond)
		p.accepted(now)
	}
	if p.rate() != 20 {
		t.Fatalf("rate after 1000 accepted submits = %v, want back at the configured 20", p.rate())
	}
}
