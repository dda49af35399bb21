package statusindex

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/pkg/status/statustest"
	"github.com/smsflow/smsflow/streams"
)

// BenchmarkIndexer indexes 1,000 messages of 4 statuses each (4,000 events)
// per iteration, from a filled stream, and reports events per second.
func BenchmarkIndexer(b *testing.B) {
	ctx := context.Background()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		_, js, pub := statustest.Setup(b)
		for m := range 1000 {
			for _, st := range []string{status.Accepted, status.Queued, status.Submitted, status.Delivered} {
				if err := pub.Publish(ctx, status.Event{ID: fmt.Sprintf("b%d-%04d", i, m), Status: st, Campaign: "bench"}); err != nil {
					b.Fatal(err)
				}
			}
		}
		cons, err := js.Consumer(ctx, streams.Status, streams.ConsumerStatus)
		if err != nil {
			b.Fatal(err)
		}
		s := New(js, pub, Options{}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
		b.StartTimer()
		start := time.Now()
		stop := natstest.Run(b, 10*time.Second, s.Run)
		natstest.Eventually(b, time.Minute, "indexer drains", func() bool {
			info, err := cons.Info(ctx)
			return err == nil && info.NumPending == 0 && info.NumAckPending == 0
		})
		total += time.Since(start)
		b.StopTimer()
		stop()
		counts, _ := js.Stream(ctx, streams.Counts)
		if c, err := status.Counts(ctx, counts, "bench"); err != nil || c.Counts[status.Delivered] != 1000 {
			b.Fatalf("counts %+v, %v; want 1000 delivered", c, err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(4000*b.N)/total.Seconds(), "events/s")
}
