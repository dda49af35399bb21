package egress

import (
	"context"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// A worker busy with a transactional message while its bulk ask is open
// gets a bulk message in the ask's answer. If its link is paused then, it
// must not hold that message through the pause: past the ack wait the
// server delivers it again (here to l2), and the copy held would be sent on
// resume too. Found in review; it failed 3 of 3 runs before the fix.
func TestABulkMessageIsNotHeldThroughAPause(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true, RespDelay: 400 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	cfg, err := streams.EgressConsumer(pool)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AckWait = 2 * time.Second
	if _, err := e.js.UpdateConsumer(ctx, streams.Egress, cfg); err != nil {
		t.Fatal(err)
	}
	kv := e.bucket(streams.BucketLinks)
	if err := linkstate.SetPaused(ctx, kv, "l2", true, "until l1 holds the message"); err != nil {
		t.Fatal(err)
	}
	l1 := e.linkOpts(1000, 1000, 1)
	l2 := e.linkOpts(1000, 1000, 1)
	l2.Name, l2.SMPP.Name = "l2", "l2"
	e.runLinks([]LinkOptions{l1, l2}, fastRetries(5))
	natstest.Eventually(t, wait, "want both links bound", func() bool { return e.sim.Binds() >= 2 })
	time.Sleep(300 * time.Millisecond)
	e.publish(0, 1, func(m *envelope.Message) { m.Kind = envelope.Transactional }) // l1's worker takes it: a 400 ms submit
	time.Sleep(20 * time.Millisecond)
	e.publish(1, 2, nil) // the bulk message, into the open ask's answer
	time.Sleep(50 * time.Millisecond)
	if err := linkstate.SetPaused(ctx, kv, link, true, "while the worker holds it"); err != nil {
		t.Fatal(err)
	}
	if err := linkstate.SetPaused(ctx, kv, "l2", false, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // past the ack wait
	if err := linkstate.SetPaused(ctx, kv, link, false, ""); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "want both messages accepted", func() bool { return e.acceptedEach(2) })
	time.Sleep(2 * time.Second) // a copy held through the pause would go out now
	e.acceptedOnce(2)
}
