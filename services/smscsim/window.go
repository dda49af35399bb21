package smscsim

import (
	"sort"
	"time"
)

// window is a strict rolling rate limit: at most limit events in any half-open span of length span.
// Time is passed in (monotonic readings from time.Now in the server, fake ones in tests); callers
// must pass non-decreasing times. A limit <= 0 allows everything and records nothing.
type window struct {
	span  time.Duration
	limit int
	ts    []time.Time // accepted events, oldest first; ts[head:] are live
	head  int
}

// newWindow returns a window allowing limit events per span.
func newWindow(limit int, span time.Duration) *window {
	return &window{span: span, limit: limit}
}

// allow reports whether one more event at now keeps every span-long window at or under the limit.
// It does not record the event: call add once the event is really accepted.
func (w *window) allow(now time.Time) bool {
	if w.limit <= 0 {
		return true
	}
	w.evict(now)
	return len(w.ts)-w.head < w.limit
}

// add records an accepted event at now.
func (w *window) add(now time.Time) {
	if w.limit <= 0 {
		return
	}
	w.evict(now)
	w.ts = append(w.ts, now)
}

// evict drops events that can no longer share a span-long window with now (now-t >= span).
func (w *window) evict(now time.Time) {
	for w.head < len(w.ts) && now.Sub(w.ts[w.head]) >= w.span {
		w.head++
	}
	if w.head > 64 && w.head > len(w.ts)/2 { // compact so the slice stays about limit long
		n := copy(w.ts, w.ts[w.head:])
		w.ts = w.ts[:n]
		w.head = 0
	}
}

// maxInWindow returns the most events of ts (any order) that fit in one half-open window
// [a, a+span): two events exactly span apart never share a window, as in window.allow.
func maxInWindow(ts []time.Time, span time.Duration) int {
	if len(ts) == 0 || span <= 0 {
		return 0
	}
	s := make([]time.Time, len(ts))
	copy(s, ts)
	sort.Slice(s, func(i, j int) bool { return s[i].Before(s[j]) })
	best, lo := 0, 0
	for hi := range s {
		for s[hi].Sub(s[lo]) >= span {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}
