package egress

import (
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// One message per error class, refused by the simulator's error injection,
// each ending as its class says, with exact submit counts: a permanent
// refusal fails at once with its code, a retryable one fails after max
// attempts, a throttle is retried until accepted, and a message whose ttl
// runs out while it is being retried expires.
func TestEachErrorClassEndsTheMessageAsItShould(t *testing.T) {
	const maxAttempts, backoff, ttl = 8, 300 * time.Millisecond, 1500 * time.Millisecond
	e := newEnv(t, smscsim.Options{NoReceipts: true, Fail: func(d string, n int) pdu.Status {
		switch d {
		case simDst(0):
			return 0x0A // ESME_RINVSRCADR: permanent
		case simDst(1):
			return 0x0B // ESME_RINVDSTADR: permanent
		case simDst(2):
			return 0x14 // ESME_RMSGQFUL: retryable, on every attempt
		case simDst(3):
			if n <= 2 {
				return 0x58 // ESME_RTHROTTLED twice, then accepted
			}
		case simDst(4):
			return 0x45 // ESME_RSUBMITFAIL: retryable, until the ttl runs out
		}
		return 0
	}})
	e.publish(0, 4, nil)
	e.publish(4, 5, func(m *envelope.Message) {
		m.TTL = ttl
		m.ExpiresAt = m.AcceptedAt.Add(m.TTL)
	})
	opts := fastRetries(maxAttempts)
	opts.BackoffMin, opts.BackoffMax = backoff, backoff // no jitter: the ttl runs out after about 5 attempts
	r := e.run(e.linkOpts(100, 10, 2), opts)
	natstest.Eventually(t, 2*wait, "want every message settled", func() bool { return e.streamMsgs(streams.Egress) == 0 })

	final := func(i int) status.Event {
		h := e.history(msgID(i))
		return h[len(h)-1]
	}
	for i, code := range []int{0x0A, 0x0B} {
		if f := final(i); f.Status != status.Failed || f.Reason != status.ReasonPermanent || f.Code != code || len(e.history(msgID(i))) != 1 {
			t.Errorf("%s: final %+v in %d events, want only failed/permanent with code %d", msgID(i), f, len(e.history(msgID(i))), code)
		}
	}
	if f := final(2); f.Status != status.Failed || f.Reason != status.ReasonMaxAttempts || len(e.events(msgID(2), status.Retry)) != maxAttempts {
		t.Errorf("%s: final %+v after %d retries, want failed/max_attempts after %d", msgID(2), f, len(e.events(msgID(2), status.Retry)), maxAttempts)
	}
	if f := final(3); f.Status != status.Submitted || f.Attempt != 3 || len(e.events(msgID(3), status.Throttled)) != 2 {
		t.Errorf("%s: final %+v, want submitted on attempt 3 after 2 throttles", msgID(3), f)
	}
	if f := final(4); f.Status != status.Expired || len(e.events(msgID(4), status.Submitted)) != 0 {
		t.Errorf("%s: final %+v, want expired, never submitted", msgID(4), f)
	}
	// Submits: 1 + 1 permanent, 3 for max attempts, 3 for the throttled one,
	// and for the expiring one one per attempt before its ttl (at least 1,
	// at most ttl/backoff+1).
	expiring := len(e.events(msgID(4), status.Retry))
	if e.sim.Accepted() != 1 || e.sim.Rejected() != 1+1+maxAttempts+2+expiring || expiring < 1 || expiring > int(ttl/backoff)+1 {
		t.Errorf("simulator accepted %d, rejected %d (%d for the expiring one); want 1 and %d", e.sim.Accepted(), e.sim.Rejected(), expiring, 1+1+maxAttempts+2+expiring)
	}
	t.Logf("the expiring message was refused %d times before its ttl ran out", expiring)
	for st, want := range map[string]float64{status.Failed: 3, status.Expired: 1} {
		if got := r.count(r.m.final, link, st); got != want {
			t.Errorf("final_total{%s} = %v, want %v", st, got, want)
		}
	}
	if got := r.count(r.m.submits, link, "permanent"); got != 2 {
		t.Errorf("submits_total{permanent} = %v, want 2", got)
	}
	if got := r.count(r.m.retries, link); got != float64(maxAttempts+2+expiring) {
		t.Errorf("retries_total = %v, want %d", got, maxAttempts+2+expiring)
	}
}
