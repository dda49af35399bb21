package pacing

import "time"

// Clocks. Slot times are shared by every instance on a link, so they are
// expressed in one reference clock: the NATS server's, as it stamps each
// stored message (KeyValueEntry.Created). A host never reads that clock
// directly; it estimates offset = server - local from writes it made itself:
// it notes its local time t0 before a KV write and t1 after the reply, and
// when it later reads the entry that write created, the entry's timestamp was
// taken by the server somewhere inside [t0, t1]. So offset ≈ created -
// (t0+t1)/2, off by at most (t1-t0)/2, half the round trip.
//
// Samples come for free when a lease's read finds this instance's own last
// write still current, and otherwise from a probe (a Put and a Get of the key
// "clock.<link>", never the link's key, so probes cost nobody a conflict) when
// no sample is younger than resyncAfter. The estimate is the sample with the
// smallest round trip among the last len(clockFilter.s) younger than
// maxSampleAge: the NTP clock filter in small, robust against one slow round
// trip (a GC pause) dragging the estimate off. Local time is measured on the
// monotonic clock from the Limiter's start, so a step of this host's wall
// clock changes nothing.
//
// What the residual error does: it shifts when this instance sends its slots,
// by at most half its best round trip (≈ 0.1 ms on one host, ≈ 0.5 ms in a
// LAN). It cannot double-book a slot: slots are exclusive in the reference
// clock because each reservation moves TAT forward under compare-and-set, in
// whatever clock an instance believes. Two instances whose errors differ by e
// may send slots up to e closer than T; Guard absorbs that together with
// lateness (see Guard). With a replicated bucket (R3) the stamps are the
// stream leader's clock, so a leader change shifts the reference by the
// servers' clock difference until every instance has a new sample: keep the
// servers on NTP.
//
// Options.LocalClock drops all of this and uses the local clock as the
// reference: right when every instance reads the same clock (one host, or
// tests with a fake clock).
const (
	resyncAfter  = 10 * time.Second // probe when no sample is younger
	maxSampleAge = 30 * time.Second // older samples are not used
)

// clockSample is one estimate of offset = reference - local, in nanoseconds.
type clockSample struct {
	offset int64
	rtt    int64 // round trip of the write; the error is at most rtt/2
	at     int64 // local time of the sample
}

// clockFilter keeps the last samples and picks the one with the smallest round trip.
type clockFilter struct {
	s    [8]clockSample
	n    int // samples stored
	next int // index the next sample overwrites
}

// add records that the reference clock read ref while the local clock was
// inside [t0, t1], and returns the sample.
func (f *clockFilter) add(ref, t0, t1 int64) clockSample {
	c := clockSample{offset: ref - (t0 + (t1-t0)/2), rtt: max(t1-t0, 0), at: t1}
	f.s[f.next] = c
	f.next = (f.next + 1) % len(f.s)
	f.n = min(f.n+1, len(f.s))
	return c
}

// best is the sample with the smallest round trip younger than maxSampleAge
// at local time now, and whether there is one.
func (f *clockFilter) best(now int64) (clockSample, bool) {
	var b clockSample
	ok := false
	for _, c := range f.s[:f.n] {
		if now-c.at > int64(maxSampleAge) {
			continue
		}
		if !ok || c.rtt < b.rtt {
			b, ok = c, true
		}
	}
	return b, ok
}

// stale reports whether no sample is younger than resyncAfter at local time now.
func (f *clockFilter) stale(now int64) bool {
	for _, c := range f.s[:f.n] {
		if now-c.at <= int64(resyncAfter) {
			return false
		}
	}
	return true
}
