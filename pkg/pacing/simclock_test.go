package pacing

import (
	"context"
	"sync"
	"time"
)

// simClock is virtual time for goroutines that also do real I/O: time stands
// still while any of its goroutines runs (KV round trips included), and when
// all of them sleep it jumps to the earliest wake-up. So every Sleep ends
// exactly at its target, whatever the machine's speed, and a test of many
// seconds of pacing runs in the time its KV operations take.
type simClock struct {
	mu       sync.Mutex
	now      time.Time
	running  int // goroutines started with Go that are not sleeping
	sleepers []*simSleeper
	wg       sync.WaitGroup
}

type simSleeper struct {
	at    time.Time
	woken bool
	wake  chan struct{}
}

func newSimClock(start time.Time) *simClock { return &simClock{now: start} }

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Go runs f as one of the clock's goroutines.
func (c *simClock) Go(f func()) {
	c.mu.Lock()
	c.running++
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			c.running--
			c.advance()
			c.mu.Unlock()
		}()
		f()
	}()
}

// Wait waits for every goroutine started with Go.
func (c *simClock) Wait() { c.wg.Wait() }

// Sleep is Options.Sleep; only the clock's goroutines may call it.
func (c *simClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	s := &simSleeper{at: c.now.Add(d), wake: make(chan struct{})}
	c.sleepers = append(c.sleepers, s)
	c.running--
	c.advance()
	c.mu.Unlock()
	select {
	case <-s.wake:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if s.woken {
			return nil
		}
		for i, o := range c.sleepers {
			if o == s {
				c.sleepers = append(c.sleepers[:i], c.sleepers[i+1:]...)
				break
			}
		}
		c.running++
		return ctx.Err()
	}
}

// advance moves time to the earliest wake-up once nobody runs. Holding mu.
func (c *simClock) advance() {
	if c.running > 0 || len(c.sleepers) == 0 {
		return
	}
	next := c.sleepers[0].at
	for _, s := range c.sleepers[1:] {
		if s.at.Before(next) {
			next = s.at
		}
	}
	if next.After(c.now) {
		c.now = next
	}
	keep := c.sleepers[:0]
	for _, s := range c.sleepers {
		if s.at.After(c.now) {
			keep = append(keep, s)
			continue
		}
		s.woken = true
		c.running++
		close(s.wake)
	}
	c.sleepers = keep
}
