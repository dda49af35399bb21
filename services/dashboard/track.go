package dashboard

import (
	"slices"
	"time"
)

// tracker keeps the first-seen times of messages until their terminal event,
// at most max of them: when full, the oldest entry goes (counted in evicted).
// Order is kept in a queue of ids with lazy deletion, compacted when it holds
// twice as many ids as the map.
type tracker struct {
	max     int
	seen    map[string]*times
	order   []string
	evicted int
}

type times struct{ accepted, submitted time.Time }

func newTracker(max int) *tracker { return &tracker{max: max, seen: map[string]*times{}} }

func (t *tracker) len() int { return len(t.seen) }

func (t *tracker) entry(id string) *times {
	if e, ok := t.seen[id]; ok {
		return e
	}
	for len(t.seen) >= t.max && len(t.order) > 0 {
		old := t.order[0]
		t.order = t.order[1:]
		if _, ok := t.seen[old]; ok {
			delete(t.seen, old)
			t.evicted++
		}
	}
	e := &times{}
	t.seen[id] = e
	t.order = append(t.order, id)
	if len(t.order) > 2*t.max+16 {
		t.compact()
	}
	return e
}

func (t *tracker) compact() {
	out := t.order[:0]
	for _, id := range t.order {
		if _, ok := t.seen[id]; ok {
			out = append(out, id)
		}
	}
	// A fresh slice, so the dropped prefix of the old array is freed.
	t.order = slices.Clone(out)
}

// accepted records the accepted time (the first one, if replayed).
func (t *tracker) accepted(id string, at time.Time) {
	if e := t.entry(id); e.accepted.IsZero() {
		e.accepted = at
	}
}

// released restarts a scheduled message's clock: its wait for send_at is
// what it asked for, not latency.
func (t *tracker) released(id string, at time.Time) {
	t.entry(id).accepted = at
}

// submitted records the submitted time and returns the accepted time, if
// the accepted event was seen. A second submitted event (a redelivery found
// the message submitted) is not a second sample.
func (t *tracker) submitted(id string, at time.Time) (time.Time, bool) {
	e := t.entry(id)
	if !e.submitted.IsZero() {
		return time.Time{}, false
	}
	e.submitted = at
	return e.accepted, !e.accepted.IsZero()
}

func (t *tracker) submittedAt(id string) (time.Time, bool) {
	e, ok := t.seen[id]
	if !ok || e.submitted.IsZero() {
		return time.Time{}, false
	}
	return e.submitted, true
}

func (t *tracker) remove(id string) { delete(t.seen, id) }

// rateWindow is how many whole seconds the rates average over.
const rateWindow = 5

// window counts events per second in a ring of the last seconds, for rates.
type window struct {
	secs [rateWindow + 2]second
}

type second struct {
	unix   int64
	counts map[string]float64
}

func newWindow() *window { return &window{} }

func (w *window) add(now time.Time, key string, n float64) {
	u := now.Unix()
	s := &w.secs[u%int64(len(w.secs))]
	if s.unix != u || s.counts == nil {
		*s = second{unix: u, counts: map[string]float64{}}
	}
	s.counts[key] += n
}

// rates are the per-second averages over the rateWindow whole seconds
// before now's second (the current second is still filling).
func (w *window) rates(now time.Time) map[string]float64 {
	out := map[string]float64{}
	cur := now.Unix()
	for _, s := range w.secs {
		if s.unix < cur-rateWindow || s.unix >= cur {
			continue
		}
		for k, n := range s.counts {
			out[k] += n / rateWindow
		}
	}
	return out
}

// samples is a ring of the most recent latency samples, in seconds.
type samples struct {
	ring []float64
	next int
	full bool
}

func newSamples(n int) *samples { return &samples{ring: make([]float64, n)} }

func (s *samples) add(v float64) {
	s.ring[s.next] = v
	s.next++
	if s.next == len(s.ring) {
		s.next, s.full = 0, true
	}
}

// summary returns the count, mean and 99th percentile (nearest rank) of the
// samples, in milliseconds.
func (s *samples) summary() Latency {
	n := s.next
	if s.full {
		n = len(s.ring)
	}
	if n == 0 {
		return Latency{}
	}
	v := slices.Clone(s.ring[:n])
	slices.Sort(v)
	var sum float64
	for _, x := range v {
		sum += x
	}
	rank := (99*n + 99) / 100 // ceil(0.99·n), 1-based
	return Latency{Samples: n, AvgMs: round3(sum / float64(n) * 1000), P99Ms: round3(v[rank-1] * 1000)}
}

func round3(x float64) float64 {
	return float64(int64(x*1000+0.5)) / 1000
}
