package egress

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// A message that comes back after the SMSC accepted it (the ack was lost, or
// the process died between the submitted status and the ack) is not sent
// again; its receipt index is written again in case the crash came first.
func TestARedeliveredSubmittedMessageIsNotSentAgain(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// Message 0's ttl has passed by its redelivery: it must still not be
	// marked expired, since the SMSC has it and its receipt will decide.
	e.publish(0, 2, func(m *envelope.Message) {
		if m.ID == msgID(0) {
			m.ExpiresAt = time.Now().Add(-time.Minute)
		}
	})
	// First delivery of both, then give them back: the next is a redelivery.
	cons, err := e.js.Consumer(ctx, streams.Egress, streams.EgressConsumerName(pool))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.Fetch(2, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range b.Messages() {
		n++
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	if n != 2 {
		t.Fatalf("fetched %d, want 2", n)
	}
	// Message 0 had reached the SMSC (two parts); message 1 had not.
	if err := e.pub.Publish(ctx, status.Event{ID: msgID(0), Status: status.Submitted, Link: link, SMSCID: "AB-1,AB-2", Parts: 2}); err != nil {
		t.Fatal(err)
	}
	r := e.run(e.linkOpts(50, 5, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want message 1 sent", func() bool { return e.sim.AcceptedTo(simDst(1)) == 1 })
	natstest.Eventually(t, wait, "want message 0 acked as already submitted", func() bool {
		return r.count(r.m.redeliveredSubmitted, link) == 1
	})
	if got := e.sim.AcceptedTo(simDst(0)); got != 0 {
		t.Fatalf("message 0 was submitted %d more times, want 0", got)
	}
	if ev, err := e.pub.Latest(ctx, msgID(0)); err != nil || ev.Status != status.Submitted {
		t.Fatalf("message 0 latest = %+v, %v; want still submitted, not expired", ev, err)
	}
	kv, err := e.js.KeyValue(ctx, streams.BucketDLRIndex)
	if err != nil {
		t.Fatal(err)
	}
	for _, sid := range []string{"AB-1", "AB-2"} {
		entry, err := kv.Get(ctx, dlr.Key(link, dlr.NormalizeID(sid)))
		var v IndexEntry
		if err != nil || json.Unmarshal(entry.Value(), &v) != nil || v.ID != msgID(0) || v.Parts != 2 {
			t.Fatalf("index of %s: %v %+v, want message 0 with 2 parts", sid, err, v)
		}
	}
	natstest.Eventually(t, wait, "want nothing left in the pool", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// The link's bucket is in KV: when it cannot be read, the workers wait and
// try again; they must not give up and leave a bound link idle for good.
func TestALinkOutlivesAnUnreadablePacingState(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, streams.BucketPacing)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "link."+link, []byte("not a bucket")); err != nil {
		t.Fatal(err)
	}
	e.run(e.linkOpts(50, 5, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want the link bound", func() bool { return e.sim.Binds() == 1 })
	time.Sleep(300 * time.Millisecond) // the workers meet the bad state
	if err := kv.Delete(ctx, "link."+link); err != nil {
		t.Fatal(err)
	}
	e.publish(0, 5, nil)
	natstest.Eventually(t, wait, "want every message sent once the state is readable", func() bool { return e.acceptedEach(5) })
}
