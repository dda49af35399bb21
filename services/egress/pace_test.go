package egress

import (
	"context"
	"math"
	"testing"
	"time"
)

// fakeGate records the rates pace asks for.
type fakeGate struct{ rates []float64 }

func (g *fakeGate) Wait(context.Context) error { return nil }
func (g *fakeGate) SetRate(r float64)          { g.rates = append(g.rates, r) }

func TestPaceCutsOnAThrottleOncePerSecondAndRecoversToBelowTheOverrun(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := &fakeGate{}
	p := newPace(g, 100)
	p.throttled(t0)
	if r := p.rate(); math.Abs(r-59.5) > 1e-9 {
		t.Fatalf("rate after a throttle at 100/s = %v, want 70%% of a ceiling of 85", r)
	}
	p.throttled(t0.Add(500 * time.Millisecond)) // the same overrun, reported by another submit
	if r := p.rate(); math.Abs(r-59.5) > 1e-9 {
		t.Fatalf("a second throttle within a second changed the rate to %v", r)
	}
	now := t0.Add(time.Second)
	for range 100 { // about a second of accepted submits
		now = now.Add(10 * time.Millisecond)
		p.accepted(now)
	}
	if r := p.rate(); r != 85 {
		t.Fatalf("rate after a second of success = %v, want back at the ceiling 85, not the configured 100", r)
	}
	if g.rates[len(g.rates)-1] != 85 {
		t.Fatalf("the gate was last set to %v, want 85", g.rates[len(g.rates)-1])
	}
	p.accepted(t0.Add(30 * time.Second))
	if r := p.rate(); r != 85 {
		t.Fatalf("rate probed above the ceiling after 30 s: %v", r)
	}
	p.accepted(t0.Add(61 * time.Second))
	if r := p.rate(); math.Abs(r-89.25) > 1e-9 {
		t.Fatalf("rate after a quiet minute = %v, want the ceiling raised 5%% to 89.25", r)
	}
}

func TestPaceNeverGoesBelowOnePerSecond(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newPace(&fakeGate{}, 20)
	for i := range 30 {
		p.throttled(t0.Add(time.Duration(i) * time.Second))
	}
	if r := p.rate(); r != 1 {
		t.Fatalf("rate after a throttle every second for 30 s = %v, want the floor of 1", r)
	}
}
