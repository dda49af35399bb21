package streams_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

// Every file in streams/ must parse into the nats.go types with no unknown
// field (the CLI's format) and be accepted by a real server.
func TestEveryDefinitionIsAcceptedByARealServer(t *testing.T) {
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ss, err := streams.Streams()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{streams.Outbound: true, streams.Egress: true, streams.Status: true, streams.DLR: true, streams.Inbound: true,
		streams.ReceiptTimers: true, streams.Counts: true,
		streams.WebhookPark: true}
	for _, c := range ss {
		if !want[c.Name] {
			t.Errorf("unexpected stream %s", c.Name)
		}
		delete(want, c.Name)
	}
	if len(want) != 0 {
		t.Fatalf("streams missing: %v", want)
	}
	if err := streams.Apply(ctx, js, []string{"default", "cz"}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	// Applying again is an update, not an error: every instance does it at start.
	if err := streams.Apply(ctx, js, []string{"default", "cz"}); err != nil {
		t.Fatalf("apply twice: %v", err)
	}
	s, err := js.Stream(ctx, streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Duplicates != 24*time.Hour || !info.Config.AllowMsgSchedules {
		t.Errorf("SMS_OUTBOUND: duplicate window %v, schedules %v; want 24h and true", info.Config.Duplicates, info.Config.AllowMsgSchedules)
	}
	eg, err := js.Stream(ctx, streams.Egress)
	if err != nil {
		t.Fatal(err)
	}
	if ei, _ := eg.Info(ctx); ei.Config.Retention != jetstream.WorkQueuePolicy {
		t.Errorf("SMS_EGRESS retention = %v, want work-queue", ei.Config.Retention)
	}
	for _, b := range []string{streams.BucketDLRIndex, streams.BucketStatus, streams.BucketPacing, streams.BucketLinks, streams.BucketReceiptParts, streams.BucketWebhooks,
		streams.BucketCaps, streams.BucketDedup, streams.BucketOptOut} {
		if _, err := js.KeyValue(ctx, b); err != nil {
			t.Errorf("kv %s: %v", b, err)
		}
	}
	for _, sc := range [][2]string{{streams.ReceiptTimers, streams.ConsumerReceiptTimeouts},
		{streams.WebhookPark, streams.ConsumerWebhooksDue}} {
		if _, err := js.Consumer(ctx, sc[0], sc[1]); err != nil {
			t.Errorf("consumer %s/%s: %v", sc[0], sc[1], err)
		}
	}
	// The duplicate window gives each key its own TTL: the bucket must allow it.
	dedup, err := js.Stream(ctx, "KV_"+streams.BucketDedup)
	if err != nil {
		t.Fatal(err)
	}
	if di, _ := dedup.Info(ctx); !di.Config.AllowMsgTTL {
		t.Errorf("KV %s does not allow per-key TTLs", streams.BucketDedup)
	}
	if _, err := js.Consumer(ctx, streams.Inbound, streams.ConsumerOptOut); err != nil {
		t.Errorf("opt-out consumer on %s: %v", streams.Inbound, err)
	}
	c, err := js.Consumer(ctx, streams.Egress, streams.EgressConsumerName("cz"))
	if err != nil {
		t.Fatalf("egress consumer of pool cz: %v", err)
	}
	if f := c.CachedInfo().Config.FilterSubject; f != streams.EgressSubject("cz") {
		t.Errorf("egress-cz filter = %q, want %q", f, streams.EgressSubject("cz"))
	}
	pc, err := js.Consumer(ctx, streams.Egress, streams.PriorityConsumerName("cz"))
	if err != nil {
		t.Fatalf("priority consumer of pool cz: %v", err)
	}
	if f := pc.CachedInfo().Config.FilterSubject; f != streams.PrioritySubject("cz") {
		t.Errorf("priority filter = %q, want %q", f, streams.PrioritySubject("cz"))
	}
}

// The blacklist's KV and Object Store buckets exist after Apply.
func TestApplyMakesTheBlacklistBuckets(t *testing.T) {
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if _, err := js.KeyValue(ctx, streams.BucketBlacklist); err != nil {
		t.Errorf("kv %s: %v", streams.BucketBlacklist, err)
	}
	if _, err := js.ObjectStore(ctx, streams.ObjectBucketBlacklist); err != nil {
		t.Errorf("object store %s: %v", streams.ObjectBucketBlacklist, err)
	}
}

// A consumer an earlier version created and this one no longer reads would
// keep its stream's messages pending forever: Apply deletes it.
func TestApplyDeletesTheConsumersOfEarlierVersions(t *testing.T) {
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	c, err := js.CreateConsumer(ctx, streams.Status, jetstream.ConsumerConfig{Durable: "receipt-timers", FilterSubject: "sms.status.>", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// While it has an event to hand out (an old instance may still read
	// it), it stays.
	if _, err := js.Publish(ctx, "sms.status.m1", []byte(`{"id":"m1","status":"accepted"}`)); err != nil {
		t.Fatal(err)
	}
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatalf("apply over the old consumer: %v", err)
	}
	if _, err := js.Consumer(ctx, streams.Status, "receipt-timers"); err != nil {
		t.Fatalf("the obsolete consumer was deleted with an event pending: %v", err)
	}
	b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatalf("apply over the drained old consumer: %v", err)
	}
	if _, err := js.Consumer(ctx, streams.Status, "receipt-timers"); err == nil {
		t.Fatal("the drained obsolete consumer receipt-timers on SMS_STATUS is still there after Apply")
	}
}
