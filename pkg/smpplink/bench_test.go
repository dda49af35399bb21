package smpplink_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

// BenchmarkSubmitWindow measures submits/s over one bind to the simulator
// with 1, 10 and 50 submits in flight, with the simulator answering at once
// and after 20 ms (a remote SMSC's round trip). Run it alone:
//
//	go test -run '^$' -bench SubmitWindow -benchtime 2000x ./pkg/smpplink/
func BenchmarkSubmitWindow(b *testing.B) {
	for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
		for _, window := range []int{1, 10, 50} {
			b.Run(fmt.Sprintf("delay=%v/window=%d", delay, window), func(b *testing.B) {
				sim := smscsim.NewServer(b, creds(smscsim.Options{NoReceipts: true, RespDelay: delay}))
				cfg := config(sim.Addr())
				cfg.Window = window
				l := smpplink.Open(cfg, nil, slog.New(slog.DiscardHandler))
				b.Cleanup(func() { _ = l.Close() })
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				if err := l.WaitBound(ctx); err != nil {
					b.Fatal(err)
				}
				var left atomic.Int64
				left.Store(int64(b.N))
				var failed atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for range window {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for left.Add(-1) >= 0 {
							if _, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "bench"}); err != nil {
								failed.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				if failed.Load() != 0 || sim.Accepted() != b.N {
					b.Fatalf("%d failed, %d accepted of %d", failed.Load(), sim.Accepted(), b.N)
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "submits/s")
			})
		}
	}
}
