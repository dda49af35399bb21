package pacing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// maxLate is how late a slot may still be used. A slot reached later (a
// worker busy elsewhere, a slow wake-up) is wasted, never sent late: sending
// it late would bunch it with the next one. See Guard for how it was chosen.
const maxLate = 5 * time.Millisecond

// MaxSubmitDelay is how long after Wait returns a caller may still submit on
// the slot (a caller that takes longer should take a fresh slot): its part
// of Guard.
const MaxSubmitDelay = 2500 * time.Microsecond

// leaseSpan is how much time an automatic lease covers, and maxLease its size
// limit: more slots per KV round trip means fewer KV operations, but longer
// blocks of the link's time held by one instance, and more wasted when that
// instance runs out of work.
const (
	leaseSpan = 20 * time.Millisecond
	maxLease  = 256
)

// horizon is how far ahead of now an instance holds slots: it reserves its
// next lease only once its last slot is nearer than that. Unbounded, every
// worker waiting for a token held a slot, window x interval ahead (100 ms
// at 2,000/s with a window of 200), and when a backlog ran out the slots
// reserved past its last message were lost to every instance: three
// instances at 2,000/s ended a run with up to 300 ms of the link unused.
const horizon = 2 * leaseSpan

// bootProbes is the number of clock samples a Limiter takes before its first
// reservation, so one slow round trip does not set its first estimate.
const bootProbes = 3

// Key is the KV key of a link's bucket state in sms_pacing.
func Key(link string) string { return "link." + link }

// clockKey is the key a Limiter probes the server's clock with.
func clockKey(link string) string { return "clock." + link }

// Options tune a Limiter; the zero value is right for production.
type Options struct {
	// Lease is the number of slots reserved per KV round trip. 0 means about
	// 20 ms worth at the current rate (at least 1, at most 256), less while
	// this instance's callers leave leased slots unused (see nextLease). Leased slots are
	// still Interval apart, so the lease size does not change the guarantee.
	Lease int
	// Now is the local clock; time.Now when nil.
	Now func() time.Time
	// Sleep waits for d or until ctx ends; a timer when nil. A fake must
	// advance Now by d before it returns (Wait checks the time again).
	Sleep func(ctx context.Context, d time.Duration) error
	// LocalClock makes the local clock the reference clock instead of the
	// NATS server's (see clock.go): only for instances that all read the same clock.
	LocalClock bool
	// Log receives lifecycle and debug records; discarded when nil.
	Log *slog.Logger
}

// Stats counts what a Limiter did since New.
type Stats struct {
	KVReads   int64 // Get requests (link state and clock probes)
	KVWrites  int64 // Create, Update and Put requests, failed ones included
	Conflicts int64 // writes lost to another instance (compare-and-set)
	Reserved  int64 // slots reserved in KV
	Granted   int64 // slots handed out by Wait
	Wasted    int64 // reserved slots never handed out: too late, SetRate, or ctx ended
	// Late is the part of Wasted that a waiter took in time but woke from
	// its sleep too late to use (a busy CPU); the rest expired in the lease
	// before any waiter asked (the workers were busy elsewhere).
	Late int64
	// ClockOffset is the estimated reference clock minus the local clock, and
	// ClockError the bound on its error (half the sample's round trip).
	ClockOffset time.Duration
	ClockError  time.Duration
}

// Limiter paces one link in one instance. It is safe for concurrent use by
// the link's workers; instances share the link through KV.
type Limiter struct {
	kv    jetstream.KeyValue
	link  string
	key   string
	burst int
	lease int
	local bool
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
	log   *slog.Logger

	epoch    time.Time // local clock at New; local times are monotonic offsets from it
	epochNs  int64
	rate     atomic.Uint64 // math.Float64bits of the rate
	offset   atomic.Int64  // reference - local, ns
	clockErr atomic.Int64

	// sem is held by the one goroutine that takes a slot or refills the lease,
	// across its KV round trips; it guards the fields below. A channel, so a
	// waiter's ctx can end the wait.
	sem       chan struct{}
	slots     []int64 // leased slot times, reference ns, ascending
	slotsRate float64 // the rate the lease was reserved at
	leaseN    int     // size of the last automatic lease (see nextLease)
	expired   bool    // slots of the current lease expired unused
	lastSlot  int64   // the last slot handed out (see horizon)
	clock     clockFilter
	synced    bool   // clock has given an estimate at least once
	cache     State  // the state of our last write,
	cacheRev  uint64 // and its revision (0: none)
	optimist  bool   // write on cache without reading: nobody wrote since our last write
	// lastT0 and lastT1 bracket our last write in local time, for a free clock
	// sample when a read finds it; sampled once that is taken.
	lastT0, lastT1 int64
	sampled        bool

	reads, writes, conflicts, reserved, granted, wasted, late atomic.Int64
}

// New binds a Limiter to link's key in kv (the sms_pacing bucket); the key is
// created on first use. rate is in submits per second and must be > 0; burst
// < 1 counts as 1. New does no I/O.
func New(kv jetstream.KeyValue, link string, rate float64, burst int, opts Options) *Limiter {
	if !(rate > 0) || math.IsInf(rate, 1) {
		panic(fmt.Sprintf("pacing %s: rate must be > 0, got %v", link, rate))
	}
	l := &Limiter{
		kv: kv, link: link, key: Key(link),
		burst: max(burst, 1), lease: opts.Lease, local: opts.LocalClock,
		now: opts.Now, sleep: opts.Sleep, log: opts.Log,
		sem: make(chan struct{}, 1),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.sleep == nil {
		l.sleep = sleep
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("link", link)
	l.epoch = l.now()
	l.epochNs = l.epoch.UnixNano()
	l.rate.Store(math.Float64bits(rate))
	return l
}

// Rate is the rate the Limiter reserves at.
func (l *Limiter) Rate() float64 { return math.Float64frombits(l.rate.Load()) }

// SetRate changes the rate (a throttle back-off, a recovery); the next
// reservation is made, and written, at it. A decrease takes effect at once:
// slots leased at the higher rate are dropped (counted as wasted; they stay
// reserved in KV, so the link pauses for at most one lease). An increase lets
// the lease run out first, so a rate nudged up on every submit costs nothing.
// The rate is this instance's: others keep theirs until told. A rate that is
// not > 0 is ignored.
func (l *Limiter) SetRate(rate float64) {
	if !(rate > 0) || math.IsInf(rate, 1) {
		return
	}
	l.rate.Store(math.Float64bits(rate))
}

// Stats returns the counters so far.
func (l *Limiter) Stats() Stats {
	return Stats{
		KVReads: l.reads.Load(), KVWrites: l.writes.Load(), Conflicts: l.conflicts.Load(),
		Reserved: l.reserved.Load(), Granted: l.granted.Load(), Wasted: l.wasted.Load(), Late: l.late.Load(),
		ClockOffset: time.Duration(l.offset.Load()), ClockError: time.Duration(l.clockErr.Load()),
	}
}

// Wait blocks until the caller may submit once (one token), or ctx ends. On
// nil the caller should submit at once: the slot was at most maxLate ago. The
// error is ctx's, or KV's when no slot could be reserved (then nothing may be
// sent; call again later).
func (l *Limiter) Wait(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		slot, err := l.take(ctx)
		if err != nil {
			return err
		}
		// Loop, not one sleep: the clock estimate may move while we sleep.
		for d := slot - l.refNow(); d > 0; d = slot - l.refNow() {
			if err := l.sleep(ctx, time.Duration(d)); err != nil {
				l.wasted.Add(1)
				return err
			}
		}
		if late := l.refNow() - slot; late <= int64(maxLate) {
			l.granted.Add(1)
			return nil
		}
		l.wasted.Add(1)
		l.late.Add(1)
		l.log.Debug("pacing slot wasted: woke too late", "late", time.Duration(l.refNow()-slot))
	}
}

// take pops the next leased slot that is not already too late, reserving a
// new lease when there is none.
func (l *Limiter) take(ctx context.Context) (int64, error) {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-l.sem }()
	rate := l.Rate()
	if rate < l.slotsRate && len(l.slots) > 0 {
		l.wasted.Add(int64(len(l.slots)))
		l.slots = l.slots[:0]
	}
	now := l.refNow()
	i := 0
	for i < len(l.slots) && now-l.slots[i] > int64(maxLate) {
		i++
	}
	if i > 0 {
		l.wasted.Add(int64(i))
		l.slots = l.slots[i:]
		l.expired = true
	}
	if len(l.slots) == 0 {
		if ahead := time.Duration(l.lastSlot - now); ahead > horizon {
			if err := l.sleep(ctx, ahead-horizon); err != nil {
				return 0, err
			}
		}
		slots, err := l.reserve(ctx, rate, l.nextLease(rate))
		if err != nil {
			return 0, err
		}
		l.slots, l.slotsRate, l.expired = slots, rate, false
	}
	slot := l.slots[0]
	l.slots = l.slots[1:]
	l.lastSlot = slot
	return slot, nil
}

// leaseSize is Options.Lease, or about leaseSpan worth of slots at rate.
func (l *Limiter) leaseSize(rate float64) int {
	if l.lease > 0 {
		return l.lease
	}
	n := int(rate * leaseSpan.Seconds())
	return min(max(n, 1), maxLease)
}

// nextLease is the size of the next lease: leaseSize, or with the automatic
// size as much of it as this instance's callers used last time. Leased slots
// are this instance's alone, and those its callers do not come for in time
// are lost to every instance: an instance that shares the link with others,
// or whose workers are short of work, would waste most of a full lease. So a
// lease with slots that expired halves the next one, and a lease used up
// doubles it, up to leaseSize. Holding sem.
func (l *Limiter) nextLease(rate float64) int {
	most := l.leaseSize(rate)
	if l.lease > 0 {
		return most
	}
	switch {
	case l.leaseN == 0:
		l.leaseN = most
	case l.expired:
		l.leaseN = max(l.leaseN/2, 1)
	default:
		l.leaseN = l.leaseN * 2
	}
	l.leaseN = min(l.leaseN, most)
	return l.leaseN
}

// reserve takes n slots from the link's state in KV: read, Reserve, write
// with compare-and-set, again on a lost race. The slots are exclusive because
// every successful write moves the frontier forward from the state it read.
// Holding sem.
func (l *Limiter) reserve(ctx context.Context, rate float64, n int) ([]int64, error) {
	if err := l.syncClock(ctx); err != nil {
		return nil, err
	}
	for lost := 0; ; lost++ {
		st, rev := l.cache, l.cacheRev
		if !l.optimist || rev == 0 {
			var err error
			if st, rev, err = l.read(ctx); err != nil {
				return nil, err
			}
		}
		next, slots := reserve(st, l.refNow(), rate, l.burst, n, make([]int64, 0, n))
		val, err := json.Marshal(next)
		if err != nil {
			return nil, fmt.Errorf("pacing %s: encode state: %w", l.link, err)
		}
		t0 := l.localNow()
		var nrev uint64
		if rev == 0 {
			nrev, err = l.kv.Create(ctx, l.key, val)
		} else {
			nrev, err = l.kv.Update(ctx, l.key, val, rev)
		}
		t1 := l.localNow()
		l.writes.Add(1)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			l.conflicts.Add(1)
			l.optimist = false
			l.log.Debug("pacing reservation lost a race", "lost", lost+1)
			continue
		}
		if err != nil {
			l.cacheRev = 0
			return nil, fmt.Errorf("pacing %s: write state: %w", l.link, err)
		}
		l.cache, l.cacheRev = next, nrev
		l.lastT0, l.lastT1, l.sampled = t0, t1, false
		l.reserved.Add(int64(len(slots)))
		return slots, nil
	}
}

// read gets the link's state and revision (0 when the key is missing). When
// the entry is our own last write, it is a free clock sample, and a sign that
// nobody else is writing: the next reservation may skip the read.
func (l *Limiter) read(ctx context.Context) (State, uint64, error) {
	l.reads.Add(1)
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("pacing %s: read state: %w", l.link, err)
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		// Never guess: a reset state could double-book the link.
		return State{}, 0, fmt.Errorf("pacing %s: decode state (revision %d): %w", l.link, e.Revision(), err)
	}
	l.optimist = e.Revision() == l.cacheRev
	if l.optimist && !l.sampled {
		l.sampled = true
		l.addSample(e.Created(), l.lastT0, l.lastT1)
	}
	return st, e.Revision(), nil
}

// syncClock probes the server's clock when the estimate is missing or stale:
// bootProbes samples the first time (the filter keeps the best), one later. A
// stale estimate is kept if probing fails; a missing one is an error. Holding sem.
func (l *Limiter) syncClock(ctx context.Context) error {
	if l.local || !l.clock.stale(l.localNow()) {
		return nil
	}
	want := 1
	if !l.synced {
		want = bootProbes
	}
	got := 0
	var err error
	for range 4 * want {
		var ok bool
		if ok, err = l.probe(ctx); err != nil {
			break
		}
		if ok {
			if got++; got == want {
				break
			}
		}
	}
	if got > 0 {
		if want == bootProbes {
			l.log.Info("pacing clock synced to the nats server", "offset", time.Duration(l.offset.Load()),
				"error", time.Duration(l.clockErr.Load()), "samples", got)
		}
		return nil
	}
	if err == nil {
		err = errors.New("other probes kept overwriting ours")
	}
	if !l.synced {
		return fmt.Errorf("pacing %s: clock probe: %w", l.link, err)
	}
	l.log.Warn("pacing clock probe failed, keeping the old estimate", "err", err)
	return nil
}

// probe writes the clock key and reads it back: if nobody wrote in between,
// the entry's timestamp is a clock sample. It reports whether it got one.
func (l *Limiter) probe(ctx context.Context) (bool, error) {
	t0 := l.localNow()
	rev, err := l.kv.Put(ctx, clockKey(l.link), strconv.AppendInt(nil, t0, 10))
	t1 := l.localNow()
	l.writes.Add(1)
	if err != nil {
		return false, err
	}
	l.reads.Add(1)
	e, err := l.kv.Get(ctx, clockKey(l.link))
	if err != nil || e.Revision() != rev {
		return false, err
	}
	l.addSample(e.Created(), t0, t1)
	return true, nil
}

// addSample adds a clock sample and republishes the estimate. A sample that
// disagrees with the estimate by more than both their errors allow means a
// clock stepped (here or on the server): worth a warning, since instances
// disagree until their next samples. Holding sem.
func (l *Limiter) addSample(created time.Time, t0, t1 int64) {
	if l.local {
		return
	}
	c := l.clock.add(created.UnixNano(), t0, t1)
	if l.synced {
		d := time.Duration(c.offset - l.offset.Load()).Abs()
		if d > otherBudget/2+time.Duration(c.rtt/2+l.clockErr.Load()) {
			l.log.Warn("pacing clock sample far from the estimate: a clock step?",
				"sample", time.Duration(c.offset), "estimate", time.Duration(l.offset.Load()), "rtt", time.Duration(c.rtt))
		}
	}
	b, _ := l.clock.best(t1)
	l.synced = true
	l.offset.Store(b.offset)
	l.clockErr.Store(b.rtt / 2)
}

// localNow is the local clock in Unix nanoseconds, advancing monotonically
// from New (a wall clock step on this host is not seen).
func (l *Limiter) localNow() int64 { return l.epochNs + int64(l.now().Sub(l.epoch)) }

// refNow is the reference clock in Unix nanoseconds, as this host estimates it.
func (l *Limiter) refNow() int64 { return l.localNow() + l.offset.Load() }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
