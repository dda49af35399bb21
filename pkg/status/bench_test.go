package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/pkg/status/statustest"
	"github.com/smsflow/smsflow/streams"
)

// benchSetup fills SMS_STATUS with 1,000 messages of 4 events each.
func benchSetup(b *testing.B) (jetstream.JetStream, *status.Publisher, []string) {
	_, js, p := statustest.Setup(b)
	ctx := context.Background()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("b-%04d", i)
		for _, st := range []string{status.Accepted, status.Queued, status.Submitted, status.Delivered} {
			if err := p.Publish(ctx, status.Event{ID: ids[i], Status: st, Campaign: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return js, p, ids
}

// Latest as it is: one direct get of the last message on sms.status.<id>.
func BenchmarkLatestDirectGet(b *testing.B) {
	_, p, ids := benchSetup(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if ev, err := p.Latest(ctx, ids[i%len(ids)]); err != nil || ev.Status != status.Delivered {
			b.Fatal(ev, err)
		}
	}
}

// The alternative the brief warned against: an ordered consumer per call,
// filtered on the message's subject, starting at its last event.
func BenchmarkLatestOrderedConsumer(b *testing.B) {
	js, _, ids := benchSetup(b)
	ctx := context.Background()
	s, err := js.Stream(ctx, streams.Status)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{status.Subject(ids[i%len(ids)])}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
			InactiveThreshold: 2 * time.Second,
		})
		if err != nil {
			b.Fatal(err)
		}
		m, err := c.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		var ev status.Event
		if json.Unmarshal(m.Data(), &ev); ev.Status != status.Delivered {
			b.Fatal(ev)
		}
	}
}

// History: an ordered consumer per call (GET /v1/messages/{id}).
func BenchmarkHistory(b *testing.B) {
	_, p, ids := benchSetup(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if h, err := p.History(ctx, ids[i%len(ids)], 100); err != nil || len(h) != 4 {
			b.Fatal(h, err)
		}
	}
}

// Counts: a campaign's progress, one direct get per status, whatever its size.
func BenchmarkCampaignCounts(b *testing.B) {
	js, _, _ := benchSetup(b)
	ctx := context.Background()
	for i := range 1000 {
		key := fmt.Sprint(i)
		if err := status.AddCounts(ctx, js, key, status.Transition("bench", "", status.Delivered)); err != nil {
			b.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, streams.Counts)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if c, err := status.Counts(ctx, s, "bench"); err != nil || c.Total != 1000 {
			b.Fatal(c, err)
		}
	}
}
