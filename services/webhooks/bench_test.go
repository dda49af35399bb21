package webhooks

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/pkg/status/statustest"
)

// BenchmarkDeliver sends 500 messages of 4 statuses each (2,000 requests)
// per iteration to one receiver, with the default options but for a 50 ms
// first retry, and reports deliveries per second.
func BenchmarkDeliver(b *testing.B) {
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		_, js, pub := statustest.Setup(b)
		var got atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got.Add(1) }))
		for m := range 500 {
			statustest.Life(b, pub, fmt.Sprintf("b%d-%03d", i, m), status.Accepted, status.Queued, status.Submitted, status.Delivered)
		}
		s := New(js, pub, Options{DefaultURL: srv.URL, Secret: secret, BackoffMin: 50 * time.Millisecond},
			slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
		b.StartTimer()
		start := time.Now()
		stop := natstest.Run(b, 10*time.Second, s.Run)
		natstest.Eventually(b, time.Minute, "2,000 deliveries", func() bool { return got.Load() >= 2000 })
		total += time.Since(start)
		b.StopTimer()
		stop()
		srv.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(2000*b.N)/total.Seconds(), "deliveries/s")
}
