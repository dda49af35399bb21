// Package consume runs JetStream pull consumers for the stages, and is the
// one place that acks, naks and terminates messages.
//
// A stage's handler returns an Outcome; Settle carries it out. Retries are
// naks with a delay, so the broker holds every retry and a crash loses none;
// no stage sleeps and retries in process.
package consume

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

type kind int

const (
	kindAck kind = iota
	kindRetry
	kindTerm
)

// Outcome is what to do with a message once its handler is done.
type Outcome struct {
	kind   kind
	delay  time.Duration
	reason string
}

// Ack: the message is done (forwarded, or its terminal status published).
func Ack() Outcome { return Outcome{kind: kindAck} }

// Retry: the message could not be handled now; redeliver it after delay.
func Retry(delay time.Duration) Outcome { return Outcome{kind: kindRetry, delay: delay} }

// Term: never redeliver (poison, or a terminal status already published).
func Term(reason string) Outcome { return Outcome{kind: kindTerm, reason: reason} }

// String names the outcome for logs and metric labels: ack, retry or term.
func (o Outcome) String() string {
	return [...]string{"ack", "retry", "term"}[o.kind]
}

// Settle carries out o on msg. The error is the broker's: the message will
// then be redelivered after the consumer's ack wait, which is safe because
// every stage is idempotent.
func Settle(msg jetstream.Msg, o Outcome) error {
	switch o.kind {
	case kindRetry:
		return msg.NakWithDelay(o.delay)
	case kindTerm:
		return msg.TermWithReason(o.reason)
	default:
		return msg.Ack()
	}
}

// SettleSync is Settle, but an ack waits for the server to confirm it
// (double ack). For a stage where a lost ack costs more than a round trip:
// egress, where a redelivered message would be submitted again.
func SettleSync(ctx context.Context, msg jetstream.Msg, o Outcome) error {
	if o.kind == kindAck {
		return msg.DoubleAck(ctx)
	}
	return Settle(msg, o)
}

// Touch tells the server the message is still being worked on, resetting its
// ack wait: for work that can outlast it (the parts of a long message on a
// slow link).
func Touch(msg jetstream.Msg) error { return msg.InProgress() }

// Backoff is the retry delay of a message's next attempt: exponential in the
// number of deliveries so far, capped at max, with full jitter (uniform in
// [min, cap]) so retries of a burst do not come back together.
func Backoff(msg jetstream.Msg, min, max time.Duration) time.Duration {
	n := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		n = md.NumDelivered
	}
	return BackoffN(n, min, max, rand.Float64())
}

// BackoffN is Backoff for the n-th delivery (1-based) with jitter j in [0,1).
func BackoffN(n uint64, min, max time.Duration, j float64) time.Duration {
	if min <= 0 {
		min = time.Millisecond
	}
	if max < min {
		max = min
	}
	c := min
	for i := uint64(1); i < n && c < max; i++ {
		c *= 2
	}
	if c > max {
		c = max
	}
	return min + time.Duration(j*float64(c-min))
}

// Handler handles one message and says what to do with it. ctx is cancelled
// only past the shutdown grace: a handler should finish the message in hand.
type Handler func(ctx context.Context, msg jetstream.Msg) Outcome

// Options tune Run.
type Options struct {
	Batch       int           // messages per fetch; 64 when 0
	Concurrency int           // handlers at once; 8 when 0
	MaxWait     time.Duration // how long one fetch waits for messages; 1s when 0
	Grace       time.Duration // how long in-hand messages may take after ctx ends; 10s when 0
	Log         *slog.Logger
}

// Run fetches from cons and hands each message to h until ctx is done. On
// shutdown it stops fetching, lets the handlers finish the messages they hold
// (within Grace), and naks the fetched messages no handler started, so they
// are redelivered at once to whoever runs next. Run returns nil on a clean
// shutdown.
func Run(ctx context.Context, cons jetstream.Consumer, h Handler, opts Options) error {
	if opts.Batch <= 0 {
		opts.Batch = 64
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = time.Second
	}
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Handlers run under a context that outlives ctx by Grace.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(opts.Grace, hcancel) })
	defer stop()

	// A fixed set of handler goroutines, not one per message: a goroutine's
	// stack starts small, and every new one grew it again on the first
	// decode (a twentieth of the CPU at 2,000 messages a second).
	work := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Go(func() {
			for msg := range work {
				o := safely(hctx, h, msg, log)
				if err := Settle(msg, o); err != nil {
					log.Warn("settle failed", "outcome", o.String(), "err", err)
				}
			}
		})
	}
	defer wg.Wait()
	defer close(work)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(opts.Batch, jetstream.FetchMaxWait(opts.MaxWait))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("fetch failed", "err", err)
			sleep(ctx, opts.MaxWait)
			continue
		}
		for msg := range batch.Messages() {
			if ctx.Err() == nil {
				select {
				case work <- msg:
					continue
				case <-ctx.Done():
				}
			}
			// Shutting down: give it back at once rather than after the ack wait.
			_ = msg.Nak()
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			log.Debug("fetch ended", "err", err)
		}
	}
	return nil
}

// safely runs h, and terminates the message if h panics: a handler bug must
// not take the process down on the same message after every restart.
func safely(ctx context.Context, h Handler, msg jetstream.Msg, log *slog.Logger) (o Outcome) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("handler panicked; message terminated", "panic", r, "stack", string(debug.Stack()))
			o = Term("handler panic")
		}
	}()
	return h(ctx, msg)
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
