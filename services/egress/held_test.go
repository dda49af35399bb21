package egress

import (
	"context"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// A NATS server that restarts forgets the last moments of its consumers'
// state, and delivers again, as first deliveries, messages this process
// holds or has just submitted. Copies of one envelope on the lane (separate
// stream messages) are that: a copy that comes while the first is held goes
// back until it settles, one that comes after is checked like a
// redelivery. The SMSC gets the message once.
func TestAMessageDeliveredAgainAsNewIsSubmittedOnce(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true, RespDelay: 300 * time.Millisecond})
	r := e.run(e.linkOpts(100, 1, 2), fastRetries(5))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	data, err := envelope.Encode(envelope.Message{ID: msgID(0), To: dst(0), Text: "one message, three copies", Pool: pool, AcceptedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	copyOf := func(n int) {
		t.Helper()
		// Not the message id as Nats-Msg-Id: each copy is a new stream message.
		if _, err := e.js.Publish(ctx, streams.EgressSubject(pool), data); err != nil {
			t.Fatalf("publish copy %d: %v", n, err)
		}
	}
	copyOf(1)
	copyOf(2) // most likely while the first is held (its submit takes 300 ms)
	natstest.Eventually(t, wait, "want the message submitted", func() bool { return len(e.events(msgID(0), status.Submitted)) == 1 })
	copyOf(3) // after it was submitted
	natstest.Eventually(t, wait, "want the second and third copies acked unsent", func() bool {
		return r.count(r.m.redeliveredSubmitted, link) == 2
	})
	e.acceptedOnce(1)
	if n := len(e.events(msgID(0), status.Submitted)); n != 1 {
		t.Fatalf("%d submitted events, want 1", n)
	}
	t.Logf("copies given back while the first was held: %v", r.count(r.m.heldTwice, link))
	if got := r.count(r.m.resubmitsUnknown, link); got != 0 {
		t.Fatalf("resubmits_unknown_total = %v, want 0: nothing was submitted twice", got)
	}
}
