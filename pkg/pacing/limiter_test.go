package pacing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

// pacingKV starts a server and returns it with the sms_pacing bucket, as
// streams.Apply defines it.
func pacingKV(t testing.TB) (*server.Server, jetstream.KeyValue) {
	t.Helper()
	s := natstest.RunServer(t, t.TempDir())
	return s, connectKV(t, s)
}

// connectKV is one instance's own connection to the bucket.
func connectKV(t testing.TB, s *server.Server) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatalf("apply streams: %v", err)
	}
	kv, err := js.KeyValue(ctx, streams.BucketPacing)
	if err != nil {
		t.Fatalf("bucket %s: %v", streams.BucketPacing, err)
	}
	return kv
}

// grants records when Wait returned, from every worker.
type grants struct {
	mu sync.Mutex
	at []int64
	by map[int]int
}

func (g *grants) add(inst int, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.at = append(g.at, at.UnixNano())
	if g.by == nil {
		g.by = map[int]int{}
	}
	g.by[inst]++
}

func (g *grants) sorted() []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := slices.Clone(g.at)
	slices.Sort(s)
	return s
}

// simRun runs instances Limiters on one link in virtual time, each with
// workers goroutines, until they have been granted n tokens in all, and
// returns the grant times and the limiters.
func simRun(t testing.TB, s *server.Server, link string, rate float64, burst, instances, workers, n int) ([]int64, []*Limiter, *grants) {
	t.Helper()
	clock := newSimClock(t0)
	var g grants
	ls := make([]*Limiter, instances)
	for i := range ls {
		ls[i] = New(connectKV(t, s), link, rate, burst, Options{Now: clock.Now, Sleep: clock.Sleep, LocalClock: true})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var left sync.Mutex
	remaining := n
	errs := make(chan error, instances*workers)
	for i, l := range ls {
		for range workers {
			clock.Go(func() {
				for {
					left.Lock()
					if remaining == 0 {
						left.Unlock()
						return
					}
					remaining--
					left.Unlock()
					if err := l.Wait(ctx); err != nil {
						errs <- err
						return
					}
					g.add(i, clock.Now())
				}
			})
		}
	}
	clock.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Wait: %v", err)
	}
	return g.sorted(), ls, &g
}

func TestLimitersShareALinkInVirtualTime(t *testing.T) {
	s := natstest.RunServer(t, t.TempDir())
	for _, c := range []struct {
		rate         float64
		burst, n     int
		instances, w int
	}{
		{rate: 50, burst: 1, n: 300, instances: 3, w: 2},
		{rate: 500, burst: 1, n: 3000, instances: 3, w: 2},
		{rate: 2000, burst: 1, n: 8000, instances: 3, w: 4},
		{rate: 200, burst: 20, n: 1000, instances: 3, w: 3},
	} {
		name := fmt.Sprintf("rate %v burst %d, %d instances", c.rate, c.burst, c.instances)
		t.Run(name, func(t *testing.T) {
			link := fmt.Sprintf("sim%v_%d", c.rate, c.burst)
			at, ls, g := simRun(t, s, link, c.rate, c.burst, c.instances, c.w, c.n)
			if len(at) != c.n {
				t.Fatalf("granted %d, want %d", len(at), c.n)
			}
			limit := c.burst - 1 + int(math.Ceil(c.rate))
			if got, from := maxWindow(at, int64(time.Second)); got > limit {
				t.Errorf("%d grants in the 1,000 ms from %v, want ≤ %d", got, time.Duration(from-t0.UnixNano()), limit)
			}
			T := int64(Interval(c.rate))
			if c.burst == 1 {
				for k := 1; k < len(at); k++ {
					if d := at[k] - at[k-1]; d < T {
						t.Fatalf("grants %d and %d are %v apart, want ≥ %v", k-1, k, time.Duration(d), time.Duration(T))
					}
				}
			}
			// Busy from the first grant: the ideal is n-burst intervals after the
			// burst; allow a few leases of slack for hand-over between instances.
			ideal := time.Duration(int64(c.n-c.burst) * T)
			took := time.Duration(at[len(at)-1] - at[0])
			if took < ideal || took > ideal+ideal/50 {
				t.Errorf("took %v of virtual time, want %v (+2%%)", took, ideal)
			}
			achieved := float64(c.n) / took.Seconds() / c.rate
			var st Stats
			for i, l := range ls {
				ls := l.Stats()
				if g.by[i] == 0 {
					t.Errorf("instance %d was granted nothing", i)
				}
				if ls.Granted != int64(g.by[i]) {
					t.Errorf("instance %d: Stats.Granted = %d, recorded %d", i, ls.Granted, g.by[i])
				}
				st.KVReads += ls.KVReads
				st.KVWrites += ls.KVWrites
				st.Conflicts += ls.Conflicts
				st.Reserved += ls.Reserved
				st.Wasted += ls.Wasted
			}
			t.Logf("achieved %.4f of the rate; KV ops/token %.3f; conflicts %d; reserved %d, wasted %d; shares %v",
				achieved, float64(st.KVReads+st.KVWrites)/float64(c.n), st.Conflicts, st.Reserved, st.Wasted, g.by)
			if achieved < 0.98 {
				t.Errorf("achieved %.4f of the rate, want ≥ 0.98", achieved)
			}
			if st.Wasted != 0 {
				t.Errorf("wasted %d slots: in virtual time no worker wakes late", st.Wasted)
			}
		})
	}
}

func TestSetRate(t *testing.T) {
	_, kv := pacingKV(t)
	for _, c := range []struct {
		name      string
		to        float64
		wantWaste bool
	}{
		{name: "a decrease takes effect at once, dropping the lease", to: 25, wantWaste: true},
		{name: "an increase lets the lease run out, wasting nothing", to: 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := newSimClock(t0)
			link := fmt.Sprintf("setrate%v", c.to)
			l := New(kv, link, 100, 1, Options{Now: clock.Now, Sleep: clock.Sleep, LocalClock: true})
			var at []time.Time
			var err error
			clock.Go(func() {
				for i := range 40 {
					if i == 21 { // mid-lease: the lease at 100/s is 2 slots
						l.SetRate(c.to)
					}
					if err = l.Wait(context.Background()); err != nil {
						return
					}
					at = append(at, clock.Now())
				}
			})
			clock.Wait()
			if err != nil {
				t.Fatal(err)
			}
			slowest := Interval(max(c.to, 100))
			for k := 22; k < len(at); k++ {
				if d := at[k].Sub(at[k-1]); d < slowest {
					t.Fatalf("after SetRate(%v), grants %d and %d are %v apart, want ≥ %v", c.to, k-1, k, d, slowest)
				}
			}
			if c.to < 100 && at[39].Sub(at[22]) != 17*Interval(c.to) {
				t.Errorf("after SetRate(%v), 17 intervals took %v, want %v", c.to, at[39].Sub(at[22]), 17*Interval(c.to))
			}
			e, err := kv.Get(context.Background(), Key(link))
			if err != nil {
				t.Fatal(err)
			}
			var st State
			if err := json.Unmarshal(e.Value(), &st); err != nil || st.Rate != c.to {
				t.Fatalf("stored state %s (%v), want rate %v", e.Value(), err, c.to)
			}
			if w := l.Stats().Wasted; (w > 0) != c.wantWaste {
				t.Errorf("Wasted = %d, want waste: %v", w, c.wantWaste)
			}
		})
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	_, kv := pacingKV(t)
	l := New(kv, "cz1", 1, 1, Options{})
	if err := l.Wait(context.Background()); err != nil { // the slot at now
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want context.DeadlineExceeded (the next slot is 1 s away)", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Fatalf("Wait returned after %v, want at its deadline", d)
	}
}

func TestCorruptStateIsAnErrorNotAReset(t *testing.T) {
	_, kv := pacingKV(t)
	if _, err := kv.Put(context.Background(), Key("cz1"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	l := New(kv, "cz1", 100, 1, Options{LocalClock: true})
	var syn *json.SyntaxError
	if err := l.Wait(context.Background()); !errors.As(err, &syn) {
		t.Fatalf("Wait = %v, want a *json.SyntaxError: a guessed state could double-book the link", err)
	}
}

// TestLimitersShareALinkInRealTime runs three instances on separate
// connections whose local clocks disagree by seconds, as on three hosts: only
// the estimate of the server's clock keeps them from sending each other's
// slots. The grant times are this process's real clock. A bound, never a
// speed: a slow machine wastes slots, it must not exceed the rate.
func TestLimitersShareALinkInRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 1.5 s of real time")
	}
	s := natstest.RunServer(t, t.TempDir())
	const rate = 200
	skews := []time.Duration{0, 3 * time.Second, -2 * time.Second}
	var g grants
	ls := make([]*Limiter, len(skews))
	for i, skew := range skews {
		now := func() time.Time { return time.Now().Add(skew) }
		ls[i] = New(connectKV(t, s), "real", rate, 1, Options{Now: now})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(ls))
	for i, l := range ls {
		for range 2 {
			wg.Go(func() {
				for {
					err := l.Wait(ctx)
					if err != nil {
						if !errors.Is(err, context.DeadlineExceeded) {
							errs <- err
						}
						return
					}
					g.add(i, time.Now())
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Wait: %v", err)
	}
	at := g.sorted()
	if got, _ := maxWindow(at, int64(time.Second)); got > rate {
		t.Errorf("%d grants in one 1,000 ms window, want ≤ %d", got, rate)
	}
	for i, l := range ls {
		st := l.Stats()
		// The same machine: the true offset is -skew exactly.
		if e := st.ClockOffset + skews[i]; e.Abs() > st.ClockError+time.Millisecond {
			t.Errorf("instance %d: clock offset %v, want %v ± %v", i, st.ClockOffset, -skews[i], st.ClockError)
		}
		t.Logf("instance %d: granted %d, wasted %d, conflicts %d, clock error ≤ %v",
			i, st.Granted, st.Wasted, st.Conflicts, st.ClockError)
	}
	t.Logf("%d grants in 1.5 s at rate %d", len(at), rate)
}

func TestClockFilter(t *testing.T) {
	var f clockFilter
	if _, ok := f.best(0); ok || !f.stale(0) {
		t.Fatal("an empty filter has an estimate")
	}
	sec := int64(time.Second)
	f.add(100*sec+500, 100*sec-2000, 100*sec+2000) // offset 500, rtt 4000
	f.add(101*sec+70, 101*sec-100, 101*sec+100)    // offset 70, rtt 200: the best
	f.add(102*sec-900, 102*sec-3000, 102*sec+3000) // offset -900, rtt 6000
	b, ok := f.best(102 * sec)
	if !ok || b.offset != 70 || b.rtt != 200 {
		t.Fatalf("best = %+v, want the sample with the smallest round trip (offset 70, rtt 200)", b)
	}
	if f.stale(102*sec + int64(resyncAfter) - 1) {
		t.Fatal("stale before resyncAfter")
	}
	if !f.stale(102*sec + 3000 + int64(resyncAfter) + 1) {
		t.Fatal("not stale after resyncAfter without a sample")
	}
	if b, _ := f.best(101*sec + 100 + int64(maxSampleAge) + 1); b.offset != -900 {
		t.Fatalf("best = %+v: a sample older than maxSampleAge must not be used", b)
	}
	for i := range 20 {
		f.add(int64(200+i)*sec, int64(200+i)*sec-5000, int64(200+i)*sec+5000)
	}
	if f.n != len(f.s) {
		t.Fatalf("kept %d samples, want %d", f.n, len(f.s))
	}
}

// BenchmarkLimiter runs three instances on one link in virtual time against a
// real server, so it measures what pacing costs in KV operations and how close
// to the rate it gets, not how fast a machine sleeps.
func BenchmarkLimiter(b *testing.B) {
	s := natstest.RunServer(b, b.TempDir())
	run := 0
	for _, rate := range []float64{50, 500, 2000} {
		b.Run(fmt.Sprintf("rate=%v", rate), func(b *testing.B) {
			run++
			n := max(b.N, 3)
			at, ls, _ := simRun(b, s, fmt.Sprintf("bench%d", run), rate, 1, 3, 2, n)
			var ops, conflicts int64
			for _, l := range ls {
				st := l.Stats()
				ops += st.KVReads + st.KVWrites
				conflicts += st.Conflicts
			}
			w, _ := maxWindow(at, int64(time.Second))
			b.ReportMetric(float64(ops)/float64(n), "kv_ops/token")
			b.ReportMetric(float64(conflicts)/float64(n), "conflicts/token")
			b.ReportMetric(float64(w), "max_window")
			if took := time.Duration(at[len(at)-1] - at[0]); took > 0 {
				b.ReportMetric(float64(n-1)/took.Seconds()/rate, "achieved/rate")
			}
		})
	}
}

// An automatic lease shrinks while its slots expire unused and grows back,
// doubling, up to about 20 ms worth, once leases are used up; a fixed
// Options.Lease never changes.
func TestLeaseFollowsWhatTheInstanceUses(t *testing.T) {
	l := &Limiter{}
	const rate = 2000 // leaseSize: 40 slots
	var got []int
	for _, expired := range []bool{false, true, true, true, true, true, true, false, false, false, false, false, false} {
		l.expired = expired
		got = append(got, l.nextLease(rate))
	}
	want := []int{40, 20, 10, 5, 2, 1, 1, 2, 4, 8, 16, 32, 40}
	if !slices.Equal(got, want) {
		t.Fatalf("lease sizes %v, want %v", got, want)
	}
	fixed := &Limiter{lease: 7}
	fixed.expired = true
	if n := fixed.nextLease(rate); n != 7 {
		t.Fatalf("fixed lease of 7 gave %d", n)
	}
	l.expired = false
	if n := l.nextLease(50); n != 1 {
		t.Fatalf("at 50/s (one slot in 20 ms) the lease is %d, want 1", n)
	}
}

// An instance with many more waiters than the link has slots in a horizon
// holds no more than horizon plus a lease of slots ahead of now (and a lease
// of margin, for the counters read one by one): the rest
// of the waiters wait unreserved, so slots reserved past the end of a
// backlog (lost to every instance) stay few. Real time: a waiter that holds
// the lease waits for the horizon with the others queued behind it, which
// the virtual clock would take for a deadlock. The bound does not depend on
// the machine's speed: a late wake-up only holds fewer slots.
func TestAnInstanceHoldsSlotsNoFurtherAheadThanTheHorizon(t *testing.T) {
	_, kv := pacingKV(t)
	const rate, waiters, n = 2000, 400, 2000
	l := New(kv, "horizon", rate, 1, Options{LocalClock: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	granted, most := 0, int64(0)
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			for {
				mu.Lock()
				done := granted >= n
				mu.Unlock()
				if done {
					return
				}
				if err := l.Wait(ctx); err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				st := l.Stats()
				mu.Lock()
				granted++
				most = max(most, st.Reserved-st.Granted-st.Wasted)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	limit := int64(math.Ceil(rate * (horizon + 2*leaseSpan).Seconds()))
	t.Logf("at most %d slots held ahead by %d waiters (limit %d)", most, waiters, limit)
	if most > limit {
		t.Errorf("%d slots reserved and not yet used at once, want at most %d (horizon %v + two leases of %v at %d/s)",
			most, limit, horizon, leaseSpan, rate)
	}
}
