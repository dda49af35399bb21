package egress

import (
	"context"
	"math/rand/v2"
	"time"
)

// retry runs f until it succeeds, ctx ends or total has passed, backing off
// between tries. It is used only where a nak would resend an SMS that the
// SMSC already accepted.
func retry(ctx context.Context, total time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	delay := 50 * time.Millisecond
	for {
		// Each try gets its own bound: nats.go adds its 5 s default only to a
		// context without a deadline, so a reply lost with a dying server
		// would otherwise be awaited for all of total, holding the worker.
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		err := f(actx)
		acancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		sleep(ctx, delay)
		delay = min(delay*2, time.Second)
	}
}

// attemptTimeout bounds one try of retry.
const attemptTimeout = 5 * time.Second

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func jitter() float64 { return rand.Float64() }
