package egress

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// pace is a link's token bucket, slowed down when the SMSC throttles the link
// and brought back up as submits succeed. Without it a link configured faster
// than its SMSC allows keeps overrunning it, and every overrun costs a
// message one of its MaxAttempts: messages would fail only because the link
// is too fast.
//
// A throttle halves the rate, at most once per cutHold (the submits of one
// window report the same overrun); each accepted submit adds max/(10*rate), so
// with the link busy the rate climbs back by a tenth of max per second.
type pace struct {
	lim *rate.Limiter
	max rate.Limit
	min rate.Limit

	mu      sync.Mutex
	lastCut time.Time
}

// cutHold is the least time between two cuts of the rate.
const cutHold = time.Second

func newPace(perSecond, burst int) *pace {
	max := rate.Limit(perSecond)
	return &pace{lim: rate.NewLimiter(max, burst), max: max, min: min(max, 1)}
}

// throttled records an ESME_RTHROTTLED at now.
func (p *pace) throttled(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lastCut.IsZero() && now.Sub(p.lastCut) < cutHold {
		return
	}
	p.lastCut = now
	p.lim.SetLimitAt(now, max(p.lim.Limit()/2, p.min))
}

// accepted records a submit the SMSC accepted at now.
func (p *pace) accepted(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.lim.Limit()
	if cur >= p.max {
		return
	}
	p.lim.SetLimitAt(now, min(p.max, cur+p.max/(10*cur)))
}

// rate is the current rate, in submits per second.
func (p *pace) rate() float64 { return float64(p.lim.Limit()) }
