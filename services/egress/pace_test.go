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
	p.accepted(t0.Add(500 * time.Millisecond)) // measuring: no climb yet
	if r := p.rate(); math.Abs(r-59.5) > 1e-9 {
		t.Fatalf("the rate moved to %v within the measuring second", r)
	}
	now := t0.Add(2 * time.Second)
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

func TestPaceSettlesBelowTheSMSCsLimitFromTheFractionItAccepts(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newPace(&fakeGate{}, 100)
	p.throttled(t0) // overran at 100/s: down to 59.5
	// The SMSC's window still holds the overrun: ignored.
	for i := range 20 {
		p.throttled(t0.Add(time.Duration(i+1) * 40 * time.Millisecond))
	}
	// The second after at 59.5/s against an SMSC allowing 50/s: 50 accepted, 9 throttled.
	t1 := t0.Add(time.Second)
	now := t1
	for i := range 59 {
		now = t1.Add(time.Duration(i+1) * 16 * time.Millisecond)
		if i%6 == 5 && i < 54 {
			p.throttled(now)
		} else {
			p.accepted(now)
		}
	}
	p.accepted(t1.Add(1001 * time.Millisecond)) // the measuring second is over
	want := 59.5 * (51.0 / 60.0) * 0.97
	if r := p.rate(); math.Abs(r-want) > 1e-6 {
		t.Fatalf("rate after the measuring second = %v, want %.2f: the rate times the accepted fraction, less 3%%", r, want)
	}
	for i := range 200 {
		p.accepted(t1.Add(2*time.Second + time.Duration(i)*20*time.Millisecond))
	}
	if r := p.rate(); math.Abs(r-want) > 1e-6 {
		t.Fatalf("rate climbed to %v within the quiet minute, want it to stay at %.2f", r, want)
	}
	if p.throttles.Load() != 30 {
		t.Fatalf("throttles = %d, want all 30 counted", p.throttles.Load())
	}
}
