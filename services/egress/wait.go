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
		err := f(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		sleep(ctx, delay)
		delay = min(delay*2, time.Second)
	}
}

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
