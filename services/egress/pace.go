package egress

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// gate hands out submit slots at a rate: pacing.Limiter, whose state is in KV
// sms_pacing so that every instance sending on the link shares one rate.
type gate interface {
	Wait(ctx context.Context) error
	SetRate(rate float64)
}

// pace is a link's gate plus how fast it lets submits through: the configured
// rate, lowered when the SMSC throttles and raised again as submits succeed.
// Without it a link configured faster than its SMSC allows keeps overrunning
// it, and every overrun costs a message one of its attempts.
//
// On a throttle the rate that overran, less 15%, becomes the ceiling, and the
// rate drops to 70% of that, after a pause of holdOff: the SMSC's rolling
// second is full, and anything sent before it slides is throttled too.
// Answers in the next cutHold are ignored: the SMSC's window still holds the
// overrun. In the cutHold after that it
// measures: of the submits answered, the fraction the SMSC accepted says how
// far over its limit even the lowered rate is, and the ceiling becomes that
// rate times the fraction, less 3%. So a link configured at 100/s against an SMSC allowing
// 50/s settles near 48/s after one overrun instead of bouncing off the limit
// a few times. The fraction is the same for every instance sharing the link,
// so instances that each measure it agree. When the measuring second saw no
// throttle, accepted submits bring the rate back to the ceiling within about
// a second. Above the ceiling it probes only after probeAfter without a
// throttle, 5% at a time, so a link that settled below its SMSC's limit is
// not throttled every few seconds, but finds the limit again if it was raised.
type pace struct {
	gate      gate
	max, min  float64
	throttles atomic.Int64 // every throttle seen, for sms_links

	mu        sync.Mutex
	cur       float64
	ceiling   float64
	lastCut   time.Time
	lastProbe time.Time
	holdUntil time.Time // no submit before this, after a cut
	measuring bool      // within 2*cutHold after a cut
	acc, thr  int       // answers in the second cutHold after it
}

const (
	cutHold    = time.Second
	holdOff    = 500 * time.Millisecond
	probeAfter = time.Minute
)

func newPace(g gate, perSecond int) *pace {
	max := float64(perSecond)
	return &pace{gate: g, max: max, min: min(max, 1), cur: max, ceiling: max}
}

// wait blocks until one submit (one SMPP part) may go out. A slot granted
// while a throttle cut the rate is from the rate that overran: it is dropped
// and the wait starts again, behind the hold.
func (p *pace) wait(ctx context.Context) error {
	for {
		start := time.Now()
		p.mu.Lock()
		until := p.holdUntil
		p.mu.Unlock()
		if d := time.Until(until); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		if err := p.gate.Wait(ctx); err != nil {
			return err
		}
		if !p.cutSince(start) {
			return nil
		}
	}
}

// cutSince reports whether the rate was cut after t: a token granted before
// a throttle belongs to the old rate, and is given up rather than used.
func (p *pace) cutSince(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastCut.After(t)
}

// throttled records an ESME_RTHROTTLED at now.
func (p *pace) throttled(now time.Time) {
	p.throttles.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.measure(now, &p.thr) {
		return
	}
	p.lastCut, p.lastProbe = now, now
	p.holdUntil = now.Add(holdOff)
	p.ceiling = max(p.cur*0.85, p.min)
	p.set(max(p.ceiling*0.7, p.min))
	p.measuring, p.acc, p.thr = true, 0, 0
}

// accepted records a submit the SMSC accepted at now.
func (p *pace) accepted(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.measure(now, &p.acc) {
		return
	}
	switch {
	case p.cur < p.ceiling:
		p.set(min(p.ceiling, p.cur+p.ceiling/p.cur))
	case p.ceiling < p.max && now.Sub(p.lastProbe) >= probeAfter:
		p.lastProbe = now
		p.ceiling = min(p.max, p.ceiling*1.05)
		p.set(p.ceiling)
	}
}

// measure counts an answer at now into count when it falls in the measuring
// second after a cut, and ends the measuring once it is over. It reports
// whether the link was measuring (and the answer is used up).
func (p *pace) measure(now time.Time, count *int) bool {
	if !p.measuring {
		return false
	}
	if now.Sub(p.lastCut) >= cutHold {
		*count++
	}
	p.settle(now)
	return true
}

// settle ends the measuring after a cut once 2*cutHold have passed.
func (p *pace) settle(now time.Time) {
	if now.Sub(p.lastCut) < 2*cutHold {
		return
	}
	p.measuring = false
	if p.thr == 0 {
		return // the cut was enough: climb back toward the ceiling
	}
	frac := float64(p.acc) / float64(p.acc+p.thr)
	p.ceiling = max(min(p.ceiling, p.cur*frac*0.97), p.min)
	p.set(p.ceiling)
}

func (p *pace) set(r float64) {
	if r != p.cur {
		p.cur = r
		p.gate.SetRate(r)
	}
}

// rate is the current rate, in submits per second.
func (p *pace) rate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}
