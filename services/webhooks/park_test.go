package webhooks

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/pkg/status/statustest"
	"github.com/smsflow/smsflow/streams"
)

// settled waits until durable on stream has nothing pending or unacked.
func settled(t *testing.T, js jetstream.JetStream, stream, durable string) {
	t.Helper()
	cons, err := js.Consumer(context.Background(), stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, stream+"/"+durable+" settles", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// parkedCount is how many messages SMS_WEBHOOK_PARK holds (schedules and
// due copies not yet handled).
func parkedCount(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), streams.WebhookPark)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// A dead host with 160 events, more than ten times the webhooks consumer's
// max_ack_pending (set to 12 here), does not stop a healthy host: its events
// are parked out of the consumer, the healthy host gets all its 80 statuses
// while the dead one still refuses, and when the dead host comes back it gets
// all its 160, each once, in order per message.
func TestADeadHostWithABacklogDoesNotStopTheOthers(t *testing.T) {
	_, js, pub := statustest.Setup(t)
	c, err := streams.Consumer(streams.Status, streams.ConsumerWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	c.MaxAckPending = 12
	if _, err := js.CreateOrUpdateConsumer(context.Background(), streams.Status, c); err != nil {
		t.Fatal(err)
	}
	dead, deadSrv := newReceiver(t, 1<<40) // refuses everything until failFirst is lowered
	healthy, healthySrv := newReceiver(t, 0)
	life := []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}
	const deadMsgs, healthyMsgs = 40, 20
	for i := range deadMsgs { // the dead host's events come first in the stream
		publish(t, pub, fmt.Sprintf("dead-%02d", i), deadSrv.URL, life...)
	}
	for i := range healthyMsgs {
		publish(t, pub, fmt.Sprintf("ok-%02d", i), healthySrv.URL, life...)
	}
	// Backoffs of a second or more: what parks (shorter waits are naked).
	s, m := newStage(t, js, pub, Options{PerHost: 2, Concurrency: 8, BackoffMin: time.Second, BackoffMax: 2 * time.Second})
	natstest.Run(t, 20*time.Second, s.Run)

	natstest.Eventually(t, 30*time.Second, "the healthy host gets its 80 statuses while the dead host refuses", func() bool {
		return healthy.total() == healthyMsgs*len(life)
	})
	settled(t, js, streams.Status, streams.ConsumerWebhooks) // nothing of the dead host waits in it
	if n := dead.total(); n != 0 {
		t.Fatalf("the dead host accepted %d statuses while down", n)
	}
	if _, _, req, _, _ := dead.snapshot(); req == 0 {
		t.Fatal("the dead host got no request: the test proves nothing")
	}
	if p := testutil.ToFloat64(m.events.WithLabelValues("parked")); p < deadMsgs*float64(len(life)) {
		t.Fatalf("parked metric = %v, want at least the dead host's %d events", p, deadMsgs*len(life))
	}

	dead.mu.Lock()
	dead.failFirst = 0 // back up
	dead.mu.Unlock()
	natstest.Eventually(t, 30*time.Second, "the dead host gets its 160 statuses once back", func() bool {
		return dead.total() == deadMsgs*len(life)
	})
	settled(t, js, streams.WebhookPark, streams.ConsumerWebhooksDue)
	natstest.Eventually(t, 10*time.Second, "SMS_WEBHOOK_PARK drains", func() bool { return parkedCount(t, js) == 0 })
	for _, r := range []*receiver{dead, healthy} {
		got, ids, _, maxInFlight, badSig := r.snapshot()
		onceInOrder(t, got, ids, life)
		if maxInFlight > 2 {
			t.Errorf("%d requests in flight to one host, want at most 2 (PerHost)", maxInFlight)
		}
		if badSig != 0 {
			t.Errorf("%d requests with a bad signature", badSig)
		}
	}
	if e := testutil.ToFloat64(m.events.WithLabelValues("expired")); e != 0 {
		t.Errorf("%v statuses given up, want 0", e)
	}
	if d := testutil.ToFloat64(m.events.WithLabelValues("delivered")); d != (deadMsgs+healthyMsgs)*float64(len(life)) {
		t.Errorf("delivered metric = %v, want %d", d, (deadMsgs+healthyMsgs)*len(life))
	}
	t.Logf("metrics: parked %v failed %v deferred %v duplicate %v",
		testutil.ToFloat64(m.events.WithLabelValues("parked")), testutil.ToFloat64(m.events.WithLabelValues("failed")),
		testutil.ToFloat64(m.events.WithLabelValues("deferred")), testutil.ToFloat64(m.events.WithLabelValues("duplicate")))
}

// An event parked by a process that died before its ack comes back to the
// next one, after the park has fired, and is parked again: the stream drops
// the second park (same Nats-Msg-Id), keeping only the due copy, and the
// receiver gets the status once.
func TestAParkRepeatedAfterACrashIsStoredOnce(t *testing.T) {
	_, js, pub := statustest.Setup(t)
	statustest.QuickRedelivery(t, js, streams.ConsumerWebhooks)
	rcv, srv := newReceiver(t, 0)
	publish(t, pub, "p1", srv.URL, status.Accepted)
	s, m := newStage(t, js, pub, Options{})
	cons, err := js.Consumer(context.Background(), streams.Status, streams.ConsumerWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	park, err := js.Stream(context.Background(), streams.WebhookPark)
	if err != nil {
		t.Fatal(err)
	}
	for delivery := 1; delivery <= 2; delivery++ {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		msg, ok := <-batch.Messages()
		if !ok {
			t.Fatalf("delivery %d of the event did not come", delivery)
		}
		md, _ := msg.Metadata()
		if md.NumDelivered != uint64(delivery) {
			t.Fatalf("delivery %d: NumDelivered = %d", delivery, md.NumDelivered)
		}
		e := event{seq: md.Sequence.Stream, at: md.Timestamp, data: msg.Data(), ev: status.Event{ID: "p1"}}
		if o := s.park(context.Background(), msg, e, time.Second); o != consume.Ack() {
			t.Fatalf("park = %v, want ack", o)
		}
		if delivery == 1 {
			// Not acked: the process died here. The park fires meanwhile.
			natstest.Eventually(t, 10*time.Second, "the park fires", func() bool {
				_, err := park.GetLastMsgForSubject(context.Background(), DueSubject(e.seq))
				return err == nil
			})
			continue
		}
		if err := msg.DoubleAck(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := parkedCount(t, js); n != 1 {
		t.Fatalf("SMS_WEBHOOK_PARK holds %d messages after parking the event twice, want 1 (the due copy)", n)
	}
	natstest.Run(t, 10*time.Second, s.Run)
	natstest.Eventually(t, 20*time.Second, "the parked event is delivered", func() bool { return rcv.total() == 1 })
	settled(t, js, streams.WebhookPark, streams.ConsumerWebhooksDue)
	natstest.Eventually(t, 10*time.Second, "SMS_WEBHOOK_PARK drains", func() bool { return parkedCount(t, js) == 0 })
	_, ids, requests, _, _ := rcv.snapshot()
	if requests != 1 || len(ids) != 1 {
		t.Fatalf("%d requests, event ids %v; want the one event once", requests, ids)
	}
	if d := testutil.ToFloat64(m.events.WithLabelValues("duplicate")); d != 0 {
		t.Errorf("duplicate metric = %v, want 0 (one copy parked)", d)
	}
}

// A catch-up of several earlier events to a slow host takes longer than
// the ack wait (1 s here: four requests of 400 ms): the stage tells the
// broker it is in progress, so the event is not redelivered meanwhile.
func TestALongCatchUpIsNotRedelivered(t *testing.T) {
	_, js, pub := statustest.Setup(t)
	statustest.QuickRedelivery(t, js, streams.ConsumerWebhooks)
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(400 * time.Millisecond)
		mu.Lock()
		got = append(got, r.Header.Get(HeaderEventID))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	life := []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}
	publish(t, pub, "c1", srv.URL, life...)
	// The first three statuses (and the attempt record) leave the consumer
	// undelivered, as if acked by an instance that died before sending: the
	// last one must send them first.
	cons, err := js.Consumer(context.Background(), streams.Status, streams.ConsumerWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for msg := range batch.Messages() {
		if err := msg.DoubleAck(context.Background()); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 4 {
		t.Fatalf("acked %d events beforehand, want 4", n)
	}
	s, m := newStage(t, js, pub, Options{})
	natstest.Run(t, 10*time.Second, s.Run)
	natstest.Eventually(t, 20*time.Second, "four statuses arrive", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 4 })
	settled(t, js, streams.Status, streams.ConsumerWebhooks)
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 || !slices.IsSortedFunc(got, func(a, b string) int { return seqOf(a) - seqOf(b) }) {
		t.Fatalf("requests %v, want 4, in order", got)
	}
	if d := testutil.ToFloat64(m.events.WithLabelValues("deferred")) + testutil.ToFloat64(m.events.WithLabelValues("duplicate")); d != 0 || info.Delivered.Consumer != 5 {
		t.Fatalf("deferred+duplicate = %v and %d deliveries by the consumer, want 0 and 5 (the catch-up was redelivered)", d, info.Delivered.Consumer)
	}
}

// seqOf is the sequence in an event id "<message id>.<seq>".
func seqOf(eventID string) int {
	n, _ := strconv.Atoi(eventID[strings.LastIndex(eventID, ".")+1:])
	return n
}
