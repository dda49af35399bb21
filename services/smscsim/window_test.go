package smscsim

import (
	"testing"
	"time"
)

func TestWindowAllowsLimitPerRollingSecond(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	w := newWindow(3, time.Second)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	steps := []struct {
		ms   int
		want bool
	}{
		{0, true}, {100, true}, {200, true},
		{300, false},  // a 4th within one second
		{999, false},  // the event at 0 still shares a window with 999
		{1000, true},  // 0 has left: exactly span apart never share a window
		{1050, false}, // 100, 200 and 1000 are live
		{1100, true},  // 100 has left
		{1200, true},  // 200 has left
		{1201, false}, // 1000, 1100, 1200 are live
	}
	for _, s := range steps {
		got := w.allow(at(s.ms))
		if got != s.want {
			t.Fatalf("allow at %d ms = %v, want %v", s.ms, got, s.want)
		}
		if got {
			w.add(at(s.ms))
		}
	}
}

func TestWindowRejectedEventsDoNotCount(t *testing.T) {
	t0 := time.Unix(0, 0)
	w := newWindow(1, time.Second)
	w.add(t0)
	for ms := 1; ms < 1000; ms += 100 {
		if w.allow(t0.Add(time.Duration(ms) * time.Millisecond)) {
			t.Fatalf("allow at %d ms: want throttled", ms)
		}
	}
	if !w.allow(t0.Add(time.Second)) {
		t.Fatal("allow at 1000 ms: want allowed, throttled attempts must not extend the window")
	}
}

func TestWindowWithoutLimitAllowsEverything(t *testing.T) {
	w := newWindow(0, time.Second)
	now := time.Unix(0, 0)
	for range 10_000 {
		if !w.allow(now) {
			t.Fatal("limit 0 must be unlimited")
		}
		w.add(now)
	}
	if len(w.ts) != 0 {
		t.Fatalf("limit 0 recorded %d events, want none", len(w.ts))
	}
}

func TestWindowStaysSmallUnderSteadyLoad(t *testing.T) {
	w := newWindow(10, time.Second)
	now := time.Unix(0, 0)
	for range 100_000 {
		if w.allow(now) {
			w.add(now)
		}
		now = now.Add(50 * time.Millisecond)
	}
	if live := len(w.ts) - w.head; live > 10 {
		t.Fatalf("live events = %d, want <= 10", live)
	}
	if cap(w.ts) > 1000 {
		t.Fatalf("backing slice grew to %d: eviction must compact", cap(w.ts))
	}
}

func TestMaxInWindow(t *testing.T) {
	t0 := time.Unix(0, 0)
	ms := func(v ...int) []time.Time {
		out := make([]time.Time, len(v))
		for i, m := range v {
			out[i] = t0.Add(time.Duration(m) * time.Millisecond)
		}
		return out
	}
	cases := []struct {
		name string
		ts   []time.Time
		span time.Duration
		want int
	}{
		{"no events give zero", nil, time.Second, 0},
		{"one event gives one", ms(5), time.Second, 1},
		{"events exactly a span apart never share a window", ms(0, 1000, 2000), time.Second, 1},
		{"a burst counts whole", ms(0, 1, 2, 3, 4), time.Second, 5},
		{"the densest second wins", ms(0, 500, 1400, 1500, 1600, 2399), time.Second, 4},
		{"unsorted input is sorted first", ms(1600, 0, 1500, 1400), time.Second, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := maxInWindow(c.ts, c.span); got != c.want {
				t.Fatalf("maxInWindow = %d, want %d", got, c.want)
			}
		})
	}
}
