package caps_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/caps"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, _ := bucketConn(t)
	return kv
}

// bucketConn is the bucket and the connection its JetStream uses, for
// WriteVia.
func bucketConn(t *testing.T) (jetstream.KeyValue, *nats.Conn) {
	return natstest.Bucket(t, streams.BucketCaps)
}

func window(t *testing.T, zone string) caps.Window {
	t.Helper()
	w, err := caps.NewWindow(zone)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func at(t *testing.T, zone, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWindowIsTheCalendarDayAndISOWeekOfTheZone(t *testing.T) {
	w := window(t, "Europe/Prague")
	for _, tc := range []struct {
		name string
		t    time.Time
		week string
		day  int
	}{
		{name: "Sunday 23:30 in Prague is day 7 of week 48", t: at(t, "Europe/Prague", "2026-11-29 23:30"), week: "2026W48", day: 7},
		{name: "Monday 00:10 in Prague is day 1 of week 49, while UTC still says Sunday", t: at(t, "UTC", "2026-11-29 23:10"), week: "2026W49", day: 1},
		{name: "1 January 2027 (a Friday) is in ISO week 53 of 2026", t: at(t, "Europe/Prague", "2027-01-01 12:00"), week: "2026W53", day: 5},
		{name: "the spring DST change keeps the calendar day", t: at(t, "Europe/Prague", "2026-03-29 03:30"), week: "2026W13", day: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := w.Week(tc.t); got != tc.week {
				t.Errorf("Week(%v) = %s, want %s", tc.t, got, tc.week)
			}
			if got := w.Day(tc.t); got != tc.day {
				t.Errorf("Day(%v) = %d, want %d", tc.t, got, tc.day)
			}
		})
	}
	if _, err := caps.NewWindow("Mars/Olympus"); err == nil {
		t.Error("NewWindow(Mars/Olympus) = nil error, want an unknown zone refused")
	}
}

// take counts id at now and fails the test on an error.
func take(t *testing.T, c *caps.Counter, number, id string, now time.Time) caps.Verdict {
	t.Helper()
	v, err := c.Take(context.Background(), number, id, now)
	if err != nil {
		t.Fatalf("Take(%s, %s, %v): %v", number, id, now, err)
	}
	return v
}

func TestCapsCountPerCalendarDayAndISOWeekInTheZoneWithAFakeClock(t *testing.T) {
	const zone = "Europe/Prague"
	kv := bucket(t)
	c := caps.NewCounter(kv, window(t, zone), caps.Limits{Daily: 2, Weekly: 5})
	const n = "+420600000001"
	seq := 0
	send := func(clock time.Time) caps.Verdict {
		seq++
		return take(t, c, n, fmt.Sprintf("m%d", seq), clock)
	}
	steps := []struct {
		clock string
		want  caps.Verdict
		why   string
	}{
		{"2026-11-23 08:00", caps.Pass, "Monday: first of the day"},
		{"2026-11-23 23:59", caps.Pass, "Monday: second of the day"},
		{"2026-11-23 23:59", caps.OverDaily, "Monday: a third breaks the daily cap of 2"},
		{"2026-11-24 00:00", caps.Pass, "Tuesday 00:00 Prague time is a new day"},
		{"2026-11-24 12:00", caps.Pass, "Tuesday: second"},
		{"2026-11-25 09:00", caps.Pass, "Wednesday: the week's fifth"},
		{"2026-11-25 10:00", caps.OverWeekly, "Wednesday: a sixth breaks the weekly cap of 5 though the day has 1"},
		{"2026-11-29 23:59", caps.OverWeekly, "Sunday 23:59 is still the same ISO week"},
		{"2026-11-30 00:00", caps.Pass, "Monday 00:00 starts a new ISO week"},
	}
	for _, s := range steps {
		if got := send(at(t, zone, s.clock)); got != s.want {
			t.Fatalf("%s (%s): verdict %d, want %d", s.why, s.clock, got, s.want)
		}
	}
	// The day is the zone's: 23:30 UTC on Monday is already Tuesday in Prague.
	c2 := caps.NewCounter(kv, window(t, zone), caps.Limits{Daily: 1})
	if got := take(t, c2, "+420600000002", "z1", at(t, "UTC", "2026-11-23 22:30")); got != caps.Pass {
		t.Fatalf("first at Monday 23:30 Prague: %d, want pass", got)
	}
	if got := take(t, c2, "+420600000002", "z2", at(t, "UTC", "2026-11-23 23:30")); got != caps.Pass {
		t.Fatalf("second at 23:30 UTC (Tuesday 00:30 Prague): %d, want pass: a new day in the zone", got)
	}
	if got := take(t, c2, "+420600000002", "z3", at(t, "UTC", "2026-11-24 10:00")); got != caps.OverDaily {
		t.Fatalf("third on Tuesday Prague time: %d, want daily_cp", got)
	}
}

func TestARedeliveredMessageIsNotCountedTwice(t *testing.T) {
	kv := bucket(t)
	w := window(t, "UTC")
	now := at(t, "UTC", "2026-11-23 10:00")
	c := caps.NewCounter(kv, w, caps.Limits{Daily: 2})
	if v := take(t, c, "+420600000001", "a", now); v != caps.Pass {
		t.Fatalf("a: %d", v)
	}
	// The same id again, from this instance and from one that never saw it
	// (another instance taking over after a crash): no second count.
	other := caps.NewCounter(kv, w, caps.Limits{Daily: 2})
	for i, c := range []*caps.Counter{c, other, c} {
		if v := take(t, c, "+420600000001", "a", now); v != caps.Pass {
			t.Fatalf("redelivery %d of a: %d, want pass", i, v)
		}
	}
	if v := take(t, other, "+420600000001", "b", now); v != caps.Pass {
		t.Fatalf("b: %d, want pass: a was counted once, so b is the second", v)
	}
	if v := take(t, c, "+420600000001", "c", now); v != caps.OverDaily {
		t.Fatalf("c: %d, want daily_cp (its cached value is stale and must be re-read)", v)
	}
	// Even at the cap, a counted message that comes back passes.
	if v := take(t, c, "+420600000001", "b", now); v != caps.Pass {
		t.Fatalf("b again at the cap: %d, want pass", v)
	}
	// c's cache now shows the cap reached: it settles a new id without the bucket.
	if v, ok := c.Known("+420600000001", "new", now); !ok || v != caps.OverDaily {
		t.Fatalf("Known(new) = %d, %v; want daily_cp from the cache", v, ok)
	}
	if v, ok := c.Known("+420600000001", "b", now); !ok || v != caps.Pass {
		t.Fatalf("Known(b) = %d, %v; want pass: b is counted", v, ok)
	}
	if _, ok := caps.NewCounter(kv, w, caps.Limits{Daily: 2}).Known("+420600000001", "new", now); ok {
		t.Fatal("a counter that never read the key claims to know")
	}
	u, counted, err := c.Peek(context.Background(), "+420600000001", "b", now)
	if err != nil || u != (caps.Usage{Day: 2, Week: 2}) || !counted {
		t.Fatalf("Peek(b) = %+v, %v, %v; want 2 today, 2 this week, b counted", u, counted, err)
	}
	if _, counted, _ := c.Peek(context.Background(), "+420600000001", "zz", now); counted {
		t.Fatal("Peek(zz) says counted; zz was never taken")
	}
}

func TestCountersOnSeveralInstancesRacingForOneNumberCountExactly(t *testing.T) {
	kv, nc := bucketConn(t)
	w := window(t, "UTC")
	now := at(t, "UTC", "2026-11-23 10:00")
	const instances, each, daily = 4, 50, 7
	var wg sync.WaitGroup
	passed := make([]int, instances)
	errs := make(chan error, instances*each)
	for i := range instances {
		c := caps.NewCounter(kv, w, caps.Limits{Daily: daily, Weekly: 100})
		if i%2 == 1 {
			c.WriteVia(nc) // half of them write straight to the subject
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				v, err := c.Take(context.Background(), "+420600000001", fmt.Sprintf("i%d-%d", i, j), now)
				if err != nil {
					errs <- err
					return
				}
				if v == caps.Pass {
					passed[i]++
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, p := range passed {
		total += p
	}
	if total != daily {
		t.Fatalf("%d messages passed across %d instances (%v), want exactly the daily cap %d", total, instances, passed, daily)
	}
}

func TestNoCapsCountsNothing(t *testing.T) {
	kv := bucket(t)
	c := caps.NewCounter(kv, window(t, "UTC"), caps.Limits{})
	for i := range 10 {
		if v := take(t, c, "+420600000001", fmt.Sprint(i), time.Now()); v != caps.Pass {
			t.Fatalf("message %d: %d, want pass with no caps", i, v)
		}
	}
	if _, err := kv.Get(context.Background(), c.Key("+420600000001", time.Now())); err == nil {
		t.Error("a key was written with no caps set")
	}
}
