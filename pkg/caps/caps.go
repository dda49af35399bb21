package caps

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/jspub"
)

// Limits are the caps; 0 means no cap.
type Limits struct {
	Daily  int // messages per calendar day
	Weekly int // messages per ISO week
}

// Verdict is the outcome of a cap check.
type Verdict int

const (
	Pass       Verdict = iota // under both caps (and now counted, for Take)
	OverDaily                 // the day's cap is reached
	OverWeekly                // the week's cap is reached
)

// Usage is what a recipient has received in a day and its week.
type Usage struct{ Day, Week int }

// Over says which cap u, plus one more message, would break.
func (l Limits) Over(u Usage) Verdict {
	switch {
	case l.Daily > 0 && u.Day >= l.Daily:
		return OverDaily
	case l.Weekly > 0 && u.Week >= l.Weekly:
		return OverWeekly
	}
	return Pass
}

// none reports whether no cap is set.
func (l Limits) none() bool { return l.Daily <= 0 && l.Weekly <= 0 }

// Counter counts messages per recipient in a KV bucket: one key per
// (number, ISO week), whose value lists the ids counted that week with their
// day. Every change is a compare-and-set on that key, so instances never
// lose each other's counts, and an id already listed is a redelivery: it
// passes without being counted again.
//
// Each instance keeps the last value it saw of recent keys. A key's list
// only grows, so a cached list is a prefix of the truth: when it already
// shows a cap reached, or lists the id, that holds in the bucket too and no
// round trip is needed; otherwise the write is tried against the cached
// revision, and a lost compare-and-set reads the key again.
type Counter struct {
	kv  jetstream.KeyValue
	win Window
	lim Limits
	nc  *nats.Conn // set by WriteVia

	mu    sync.Mutex
	cache map[string]state
}

// cacheMax bounds the keys a Counter remembers; past it the cache starts over.
const cacheMax = 100_000

// casAttempts bounds the compare-and-set rounds of one Take; each lost round
// means another message to the same number was counted meanwhile.
const casAttempts = 64

// NewCounter counts in kv (bucket sms_caps) under win's calendar.
func NewCounter(kv jetstream.KeyValue, win Window, lim Limits) *Counter {
	return &Counter{kv: kv, win: win, lim: lim, cache: map[string]state{}}
}

// WriteVia makes the counter's compare-and-set writes go straight to the
// bucket's subject on nc (package jspub), which costs less CPU than the
// KeyValue's Update; a refusal reads the same (jetstream.ErrKeyExists). nc
// must be the connection of the bucket's JetStream (no domain, no mirror).
func (c *Counter) WriteVia(nc *nats.Conn) *Counter {
	c.nc = nc
	return c
}

// update writes data to key if its revision is rev (0: the key does not
// exist) and returns the new revision.
func (c *Counter) update(ctx context.Context, key string, data []byte, rev uint64) (uint64, error) {
	if c.nc == nil {
		return c.kv.Update(ctx, key, data, rev)
	}
	a, err := jspub.Publish(ctx, c.nc, &nats.Msg{Subject: jspub.KVSubject(c.kv.Bucket(), key), Data: data}, jspub.Options{Expect: true, ExpectLast: rev})
	return a.Sequence, err
}

// Limits returns the caps the counter enforces.
func (c *Counter) Limits() Limits { return c.lim }

// state is one key's value at a revision (0: the key does not exist).
type state struct {
	rev     uint64
	entries []entry
}

type entry struct {
	day int
	id  string
}

func (s state) has(id string) bool {
	for _, e := range s.entries {
		if e.id == id {
			return true
		}
	}
	return false
}

func (s state) usage(day int) Usage {
	u := Usage{Week: len(s.entries)}
	for _, e := range s.entries {
		if e.day == day {
			u.Day++
		}
	}
	return u
}

// Key is the KV key of number's count in the week of t: the E.164 digits
// without "+", a dot, the ISO week ("420600000001.2026W48").
func (c *Counter) Key(number string, t time.Time) string {
	return strings.TrimPrefix(number, "+") + "." + c.win.Week(t)
}

// Take counts message id to number at now, unless that would break a cap:
// the verdict says which. A message counted before (a redelivery) passes and
// is not counted again. An error means nothing is known (KV unreachable):
// the caller retries.
func (c *Counter) Take(ctx context.Context, number, id string, now time.Time) (Verdict, error) {
	if c.lim.none() {
		return Pass, nil
	}
	key, day := c.Key(number, now), c.win.Day(now)
	st, known := c.cached(key)
	for range casAttempts {
		if st.has(id) {
			return Pass, nil
		}
		if v := c.lim.Over(st.usage(day)); v != Pass {
			if known {
				return v, nil
			}
			// Only a value read from the bucket can reject.
		} else {
			next := state{entries: append(append(make([]entry, 0, len(st.entries)+1), st.entries...), entry{day: day, id: id})}
			// Revision 0 creates the key. Update, not Create: a lost race
			// for a new key then costs no extra read inside nats.go (keys
			// here expire by the bucket's max age, which leaves no delete
			// marker for Create to step over).
			var err error
			next.rev, err = c.update(ctx, key, encode(next.entries), st.rev)
			if err == nil {
				c.remember(key, next)
				return Pass, nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return Pass, fmt.Errorf("caps: count %s: %w", key, err)
			}
		}
		var err error
		if st, err = c.read(ctx, key); err != nil {
			return Pass, err
		}
		known = true
	}
	return Pass, fmt.Errorf("caps: count %s: lost the compare-and-set %d times", key, casAttempts)
}

// Known returns the verdict Take would give id, when this instance's cache
// already settles it without a round trip: the cached list shows a cap
// reached and does not hold id (lists only grow, so the bucket says the
// same). ok is false when only the bucket can tell.
func (c *Counter) Known(number, id string, now time.Time) (v Verdict, ok bool) {
	if c.lim.none() {
		return Pass, true
	}
	st, cached := c.cached(c.Key(number, now))
	if !cached {
		return Pass, false
	}
	if st.has(id) {
		return Pass, true
	}
	if v := c.lim.Over(st.usage(c.win.Day(now))); v != Pass {
		return v, true
	}
	return Pass, false
}

// Peek returns number's usage on the day of now, read from the bucket and
// counting nothing (what a check before queueing, on_build, needs), and
// whether id is already counted: a request sent again after its messages
// were queued must not be judged against its own counts.
func (c *Counter) Peek(ctx context.Context, number, id string, now time.Time) (Usage, bool, error) {
	if c.lim.none() {
		return Usage{}, false, nil
	}
	st, err := c.read(ctx, c.Key(number, now))
	if err != nil {
		return Usage{}, false, err
	}
	return st.usage(c.win.Day(now)), st.has(id), nil
}

func (c *Counter) read(ctx context.Context, key string) (state, error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("caps: read %s: %w", key, err)
	}
	entries, err := decode(e.Value())
	if err != nil {
		return state{}, fmt.Errorf("caps: read %s: %w", key, err)
	}
	st := state{rev: e.Revision(), entries: entries}
	c.remember(key, st)
	return st, nil
}

func (c *Counter) cached(key string) (state, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.cache[key]
	return st, ok
}

// remember keeps st unless the cache holds a newer revision of key.
func (c *Counter) remember(key string, st state) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.cache[key]; ok && old.rev >= st.rev {
		return
	}
	if len(c.cache) >= cacheMax {
		clear(c.cache)
	}
	c.cache[key] = st
}

// encode writes entries one a line, "<day> <id>".
func encode(entries []entry) []byte {
	var b []byte
	for _, e := range entries {
		b = strconv.AppendInt(b, int64(e.day), 10)
		b = append(b, ' ')
		b = append(b, e.id...)
		b = append(b, '\n')
	}
	return b
}

func decode(b []byte) ([]entry, error) {
	var out []entry
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		d, id, ok := strings.Cut(line, " ")
		day, err := strconv.Atoi(d)
		if !ok || err != nil || day < 1 || day > 7 || id == "" {
			return nil, fmt.Errorf("bad entry %q", line)
		}
		out = append(out, entry{day: day, id: id})
	}
	return out, nil
}
