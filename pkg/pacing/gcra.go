package pacing

import (
	"math"
	"time"
)

// Guard is the part of every 1,000 ms that slots leave free: rate slots span
// at least 1 s + Guard, so rate+1 of them never fit in a closed 1,000 ms window.
// It is the budget for everything that moves a submit away from its slot:
// waking late (at most maxLate, see Limiter.Wait), the jitter between Wait
// returning and the SMSC reading the PDU (at most MaxSubmitDelay on the
// caller's side), and otherBudget for the rest (two hosts' clock estimates
// disagreeing, the network, the SMSC's read lagging). It costs 1.2% of the
// rate (1 s / 1.0125 s).
//
// The split was measured at 2,000/s on two busy cores. Guard 10 ms with
// maxLate 2.5 ms threw away 1.5-3% of the slots (workers waking later than
// that), so the links got 96-97% of their rate. Taking maxLate to 3.75 or
// 5 ms out of the same 10 ms left the rest 3.75 or 2.5 ms, and three
// instances were throttled. Waking more than 5 ms late is about five times
// rarer than 2.5 ms: maxLate 5 ms saves 1-2.5 points of the rate (0.3-0.6% of
// the slots are still wasted), and paying for it with a longer Guard, the rest
// kept at 5 ms, costs 0.25.
const Guard = maxLate + MaxSubmitDelay + otherBudget

// otherBudget is the part of Guard for clocks, the network and the SMSC.
const otherBudget = 5 * time.Millisecond

// maxInterval bounds Interval for tiny rates, so slot arithmetic cannot overflow.
const maxInterval = time.Hour

// State is a link's bucket in KV: the theoretical arrival time (TAT) of the
// next token, as Unix nanoseconds of the reference clock, and the rate and
// burst of the reservation that wrote it (for operators, and so that a lower
// rate does not turn stored credit into a burst).
type State struct {
	TAT   int64   `json:"tat"`
	Rate  float64 `json:"rate,omitempty"`
	Burst int     `json:"burst,omitempty"`
}

// Interval is the spacing of slots at rate: (1 s + Guard)/rate, rounded up to
// the nanosecond, at most an hour. Spacing by exactly 1 s/rate would put rate+1
// slots (at 0, T, …, rate·T = 1,000 ms) in one closed 1,000 ms window, which a
// strict SMSC counts as one too many.
func Interval(rate float64) time.Duration {
	if !(rate > 0) {
		return maxInterval
	}
	t := math.Ceil(float64(time.Second+Guard) / rate)
	if t >= float64(maxInterval) {
		return maxInterval
	}
	return time.Duration(max(t, 1))
}

// Reserve takes n consecutive slots no earlier than now, as GCRA with
// interval T = Interval(rate) and tolerance τ = (burst-1)·T: a slot at time s
// is allowed iff s ≥ TAT - τ, and each slot moves TAT to max(TAT, s) + T. It
// returns the new state and the slot times, ascending: the earliest moment each
// of the n submits may go out, never before now. A bucket idle for burst·T
// holds burst slots at now; after that, slots are T apart.
//
// The guarantee, for any sequence of Reserve calls on one state by any number
// of callers, whatever their now (clocks may disagree, calls may come late): in
// any closed 1,000 ms window lie at most burst-1+ceil(rate) slots, and with
// burst 1 any two slots are at least T apart. (Two slots granted k calls apart
// satisfy s_k - s_j ≥ (k-burst+1)·T, and 1,000 ms < rate·T.) The proof needs
// the frontier TAT - τ, the earliest next slot, to only move forward: KV
// compare-and-set makes each Reserve start from the state the last one wrote.
//
// When rate or burst differ from the state's, the frontier is carried over,
// never moved back: stored credit (a frontier behind now) keeps its number of
// tokens when the rate rises, and keeps its time (so fewer tokens) when the
// rate falls; debt (a frontier ahead of now, slots already granted) is kept as
// is. So a change never releases a burst larger than burst, and a window that
// spans it holds at most the larger of the two limits. A rate ≤ 0 or n ≤ 0
// reserves nothing; burst < 1 counts as 1.
func Reserve(s State, now time.Time, rate float64, burst, n int) (State, []time.Time) {
	next, ns := reserve(s, now.UnixNano(), rate, burst, n, nil)
	slots := make([]time.Time, len(ns))
	for i, t := range ns {
		slots[i] = time.Unix(0, t)
	}
	return next, slots
}

// reserve is Reserve in Unix nanoseconds, appending the slots to dst.
func reserve(s State, now int64, rate float64, burst, n int, dst []int64) (State, []int64) {
	if n <= 0 || !(rate > 0) || math.IsInf(rate, 1) {
		return s, dst
	}
	burst = max(burst, 1)
	t := int64(Interval(rate))
	tol := int64(burst-1) * t
	tat := s.TAT
	if s.Rate > 0 && (s.Rate != rate || max(s.Burst, 1) != burst) {
		ot := int64(Interval(s.Rate))
		f := s.TAT - int64(max(s.Burst, 1)-1)*ot // the frontier under the old parameters
		if lag := now - f; lag > 0 && t < ot {
			// Credit is kept in tokens: lag/ot tokens become lag/ot·t of time.
			f = max(f, now-int64(float64(lag)/float64(ot)*float64(t)))
		}
		tat = f + tol
	}
	for range n {
		at := max(now, tat-tol)
		dst = append(dst, at)
		tat = max(tat, at) + t
	}
	return State{TAT: tat, Rate: rate, Burst: burst}, dst
}
