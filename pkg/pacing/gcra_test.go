package pacing

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)

func ms(d float64) time.Duration { return time.Duration(d * float64(time.Millisecond)) }

func TestInterval(t *testing.T) {
	for _, c := range []struct {
		rate float64
		want time.Duration
	}{
		{rate: 1, want: ms(1012.5)},
		{rate: 50, want: ms(20.25)},
		{rate: 200, want: 5062500},
		{rate: 7, want: 144642858}, // rounded up, never down
		{rate: 2000, want: 506250},
		{rate: 1e-9, want: time.Hour},
		{rate: 0, want: time.Hour},
	} {
		if got := Interval(c.rate); got != c.want {
			t.Errorf("Interval(%v) = %v, want %v", c.rate, got, c.want)
		}
	}
	for _, rate := range []float64{1, 5, 50, 200, 500, 2000, 7, 333} {
		if n := float64(rate) * float64(Interval(rate)); n <= float64(time.Second) {
			t.Errorf("rate %v: rate·Interval = %v, want > 1 s so rate+1 slots never fit in 1,000 ms", rate, time.Duration(n))
		}
	}
}

func TestReserve(t *testing.T) {
	T100 := Interval(100)
	T10 := Interval(10)
	for _, c := range []struct {
		name        string
		state       State
		now         time.Time
		rate        float64
		burst, n    int
		want        []time.Duration // slot offsets from now
		wantTATFrom time.Duration   // new TAT, as offset from now
	}{
		{name: "an empty bucket with burst 1 gives slots from now, one interval apart",
			now: t0, rate: 100, burst: 1, n: 3,
			want: []time.Duration{0, T100, 2 * T100}, wantTATFrom: 3 * T100},
		{name: "a busy link gives slots from its TAT, not from now",
			state: State{TAT: t0.Add(ms(7)).UnixNano(), Rate: 100, Burst: 1}, now: t0, rate: 100, burst: 1, n: 2,
			want: []time.Duration{ms(7), ms(7) + T100}, wantTATFrom: ms(7) + 2*T100},
		{name: "a TAT in the past never grants a slot before now",
			state: State{TAT: t0.Add(-time.Minute).UnixNano(), Rate: 100, Burst: 1}, now: t0, rate: 100, burst: 1, n: 2,
			want: []time.Duration{0, T100}, wantTATFrom: 2 * T100},
		{name: "an idle bucket refills to burst and no more",
			state: State{TAT: t0.Add(-time.Hour).UnixNano(), Rate: 100, Burst: 4}, now: t0, rate: 100, burst: 4, n: 6,
			want: []time.Duration{0, 0, 0, 0, T100, 2 * T100}, wantTATFrom: 6 * T100},
		{name: "a bucket drained 2 intervals ago has refilled 2 slots",
			// 4 slots taken at now-2T leave TAT = now+2T; τ = 3T lets 2 go at now.
			state: State{TAT: t0.Add(2 * T100).UnixNano(), Rate: 100, Burst: 4}, now: t0, rate: 100, burst: 4, n: 4,
			want: []time.Duration{0, 0, T100, 2 * T100}, wantTATFrom: 6 * T100},
		{name: "a busy bucket with burst keeps the interval",
			state: State{TAT: t0.Add(3*T100 + ms(1)).UnixNano(), Rate: 100, Burst: 4}, now: t0, rate: 100, burst: 4, n: 2,
			want: []time.Duration{ms(1), ms(1) + T100}, wantTATFrom: 3*T100 + ms(1) + 2*T100},
		{name: "a rate decrease on a busy link continues at the frontier, then at the new interval",
			state: State{TAT: t0.Add(ms(3)).UnixNano(), Rate: 100, Burst: 1}, now: t0, rate: 10, burst: 1, n: 2,
			want: []time.Duration{ms(3), ms(3) + T10}, wantTATFrom: ms(3) + 2*T10},
		{name: "a rate decrease does not turn stored debt into a burst",
			// Busy at 100/s with burst 4: frontier TAT-3·T100 = now+1ms. At 10/s the
			// same tolerance in time would be 3·T10 = 303 ms: 4 slots at once.
			state: State{TAT: t0.Add(ms(1) + 3*T100).UnixNano(), Rate: 100, Burst: 4}, now: t0, rate: 10, burst: 4, n: 2,
			want: []time.Duration{ms(1), ms(1) + T10}, wantTATFrom: ms(1) + 3*T10 + 2*T10},
		{name: "a rate increase converts credit by tokens, not by time",
			// Idle at 10/s with burst 4 for an hour: 4 tokens, not 3,600 s worth of 100/s tokens.
			state: State{TAT: t0.Add(-time.Hour).UnixNano(), Rate: 10, Burst: 4}, now: t0, rate: 100, burst: 4, n: 6,
			want: []time.Duration{0, 0, 0, 0, T100, 2 * T100}, wantTATFrom: 6 * T100},
		{name: "a rate increase keeps 3 available tokens as 3",
			// At 10/s burst 4, frontier now-2·T10: the slot at the frontier and 2 refilled.
			state: State{TAT: t0.Add(-2*T10 + 3*T10).UnixNano(), Rate: 10, Burst: 4}, now: t0, rate: 100, burst: 4, n: 4,
			want: []time.Duration{0, 0, 0, T100}, wantTATFrom: 5 * T100},
		{name: "a rate increase on a busy link keeps its debt: slots already leased are not overlapped",
			state: State{TAT: t0.Add(ms(30)).UnixNano(), Rate: 10, Burst: 1}, now: t0, rate: 100, burst: 1, n: 2,
			want: []time.Duration{ms(30), ms(30) + T100}, wantTATFrom: ms(30) + 2*T100},
	} {
		t.Run(c.name, func(t *testing.T) {
			next, slots := Reserve(c.state, c.now, c.rate, c.burst, c.n)
			got := make([]time.Duration, len(slots))
			for i, s := range slots {
				got[i] = s.Sub(c.now)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("slots (from now) = %v, want %v", got, c.want)
			}
			if tat := time.Duration(next.TAT - c.now.UnixNano()); tat != c.wantTATFrom {
				t.Errorf("TAT - now = %v, want %v", tat, c.wantTATFrom)
			}
			if next.Rate != c.rate || next.Burst != c.burst {
				t.Errorf("state rate, burst = %v, %d; want %v, %d", next.Rate, next.Burst, c.rate, c.burst)
			}
		})
	}
}

func TestReserveNothing(t *testing.T) {
	s := State{TAT: 42, Rate: 5, Burst: 1}
	for _, c := range []struct {
		name string
		rate float64
		n    int
	}{
		{"a rate of 0 reserves nothing", 0, 3},
		{"a negative rate reserves nothing", -1, 3},
		{"a NaN rate reserves nothing", math.NaN(), 3},
		{"n = 0 reserves nothing", 5, 0},
	} {
		next, slots := Reserve(s, t0, c.rate, 1, c.n)
		if len(slots) != 0 || next != s {
			t.Errorf("%s: got %d slots and state %+v", c.name, len(slots), next)
		}
	}
}

// TestReserveProperty drives one shared state with random Reserve calls from
// several callers whose clocks are skewed and advance at random (sometimes
// idle for seconds), and checks the guarantee on the union of the slots.
// Seeded, so a failure names the seed that reproduces it.
func TestReserveProperty(t *testing.T) {
	cases := 600
	if testing.Short() {
		cases = 100
	}
	rates := []float64{0.5, 1, 3, 7.5, 10, 50, 200, 333, 1000, 2000}
	bursts := []int{1, 1, 1, 2, 5, 20}
	for seed := range uint64(cases) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		rate := rates[r.IntN(len(rates))]
		if r.IntN(3) == 0 {
			rate = 0.5 + r.Float64()*2500
		}
		burst := bursts[r.IntN(len(bursts))]
		changing := r.IntN(4) == 0 // every call picks one of two rates and bursts
		rate2, burst2 := rates[r.IntN(len(rates))], bursts[r.IntN(len(bursts))]
		maxRate, maxBurst := rate, burst
		if changing {
			maxRate, maxBurst = max(rate, rate2), max(burst, burst2)
		}
		name := fmt.Sprintf("seed %d: rate %v burst %d", seed, rate, burst)
		if changing {
			name += fmt.Sprintf(", alternating with rate %v burst %d", rate2, burst2)
		}
		T := int64(Interval(rate))
		callers := 1 + r.IntN(5)
		now := make([]int64, callers)
		for i := range now {
			now[i] = t0.UnixNano() + r.Int64N(int64(100*time.Millisecond)) - int64(50*time.Millisecond)
		}
		var st State
		var all []int64
		for range 200 + r.IntN(400) {
			i := r.IntN(callers)
			switch r.IntN(20) {
			case 0:
				now[i] += r.Int64N(int64(3 * time.Second)) // idle
			default:
				now[i] += r.Int64N(3*T + 1)
			}
			cr, cb := rate, burst
			if changing && r.IntN(2) == 0 {
				cr, cb = rate2, burst2
			}
			n := 1 + r.IntN(40)
			var slots []int64
			st, slots = reserve(st, now[i], cr, cb, n, nil)
			if len(slots) != n {
				t.Fatalf("%s: got %d slots, want %d", name, len(slots), n)
			}
			for k, s := range slots {
				if s < now[i] {
					t.Fatalf("%s: slot %d is %v before now", name, k, time.Duration(now[i]-s))
				}
				if k > 0 && s < slots[k-1] {
					t.Fatalf("%s: slots not ascending", name)
				}
			}
			all = append(all, slots...)
		}
		slices.Sort(all)
		limit := maxBurst - 1 + int(math.Ceil(maxRate))
		if got, at := maxWindow(all, int64(time.Second)); got > limit {
			t.Fatalf("%s: %d slots in the 1,000 ms from %v, want ≤ %d", name, got, time.Duration(at-t0.UnixNano()), limit)
		}
		if maxBurst == 1 {
			minT := int64(Interval(maxRate))
			for k := 1; k < len(all); k++ {
				if d := all[k] - all[k-1]; d < minT {
					t.Fatalf("%s: burst 1 but slots %v apart, want ≥ %v", name, time.Duration(d), time.Duration(minT))
				}
			}
		}
	}
}

// maxWindow is the largest number of sorted times in one closed window of
// length w, and where that window starts.
func maxWindow(sorted []int64, w int64) (int, int64) {
	best, at, j := 0, int64(0), 0
	for i := range sorted {
		for sorted[i]-sorted[j] > w {
			j++
		}
		if n := i - j + 1; n > best {
			best, at = n, sorted[j]
		}
	}
	return best, at
}

func TestMaxWindowIsClosed(t *testing.T) {
	s := []int64{0, 500, 1000, 1001, 2500}
	if n, at := maxWindow(s, 1000); n != 3 || at != 0 {
		t.Fatalf("maxWindow = %d at %d, want 3 at 0 (0, 500 and 1000 share a closed window)", n, at)
	}
}
