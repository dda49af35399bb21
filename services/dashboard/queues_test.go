package dashboard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

func TestQueueDepthIsReadPerDurableConsumer(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatal(err)
	}
	for range 7 {
		if _, err := js.Publish(ctx, streams.EgressSubject("default"), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := js.Publish(ctx, streams.PrioritySubject("default"), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	// Two of the pool's messages are taken and not acked: in work.
	c, err := js.Consumer(ctx, streams.Egress, streams.EgressConsumerName("default"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	// An ordered (ephemeral) reader must not appear: its name is random.
	for range 3 {
		if _, err := js.Publish(ctx, "sms.outbound", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{}); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	q := NewQueues(js, []string{streams.Egress, "NO_SUCH_STREAM", streams.Outbound}, reg)
	want := `
# HELP smsflow_queue_pending_messages Messages in the stream not yet delivered to the durable consumer.
# TYPE smsflow_queue_pending_messages gauge
smsflow_queue_pending_messages{consumer="egress-default",stream="SMS_EGRESS"} 5
smsflow_queue_pending_messages{consumer="egress-default-priority",stream="SMS_EGRESS"} 2
smsflow_queue_pending_messages{consumer="policy",stream="SMS_OUTBOUND"} 3
# HELP smsflow_queue_ack_pending_messages Messages delivered to the durable consumer and not yet acknowledged.
# TYPE smsflow_queue_ack_pending_messages gauge
smsflow_queue_ack_pending_messages{consumer="egress-default",stream="SMS_EGRESS"} 2
smsflow_queue_ack_pending_messages{consumer="egress-default-priority",stream="SMS_EGRESS"} 0
smsflow_queue_ack_pending_messages{consumer="policy",stream="SMS_OUTBOUND"} 0
# HELP smsflow_stream_messages Messages stored in the stream.
# TYPE smsflow_stream_messages gauge
smsflow_stream_messages{stream="SMS_EGRESS"} 9
smsflow_stream_messages{stream="SMS_OUTBOUND"} 3
# HELP smsflow_queue_read_errors_total Failed reads of stream or consumer info (the queue gauges of that scrape miss the stream).
# TYPE smsflow_queue_read_errors_total counter
smsflow_queue_read_errors_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "smsflow_queue_pending_messages",
		"smsflow_queue_ack_pending_messages", "smsflow_stream_messages", "smsflow_queue_read_errors_total"); err != nil {
		t.Fatal(err)
	}
	// The answer is reused within a second: a second gather reads nothing
	// (the missing stream would count another error).
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(q.errors); got != 1 {
		t.Fatalf("read errors after a second gather within maxAge = %v, want 1 (cached)", got)
	}
	_, queues, err := q.Read(ctx)
	if err == nil || !strings.Contains(err.Error(), "stream not found") {
		t.Fatalf("Read error = %v, want the missing stream named", err)
	}
	if len(queues) != 3 {
		t.Fatalf("queues = %+v, want the 3 durable consumers only", queues)
	}
}
