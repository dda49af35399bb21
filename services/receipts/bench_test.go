package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
)

// BenchmarkReceipts measures the stage from stored receipt to published
// status against an embedded JetStream: b.N messages of 1 or 3 parts, every
// part delivered. Reported as messages/s and receipts/s.
func BenchmarkReceipts(b *testing.B) {
	for _, parts := range []int{1, 3} {
		b.Run(fmt.Sprintf("parts=%d", parts), func(b *testing.B) {
			h := start(b, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for i := range b.N {
				for p := range parts {
					v, _ := json.Marshal(dlr.IndexEntry{ID: fmt.Sprintf("bench-%d", i), Parts: parts, Part: p + 1})
					if _, err := h.index.Put(ctx, dlr.Key(link, fmt.Sprintf("b%d-%d", i, p)), v); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ResetTimer()
			began := time.Now()
			for i := range b.N {
				for p := range parts {
					h.receipt(dlr.Record{ReceiptedID: fmt.Sprintf("b%d-%d", i, p), MessageState: 2})
				}
			}
			natstest.Eventually(b, 5*time.Minute, "want every message delivered", func() bool {
				return h.count(status.Delivered) == float64(b.N)
			})
			d := time.Since(began)
			b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N*parts)/d.Seconds(), "receipts/s")
		})
	}
}
