package policy

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

// BenchmarkPublishFloor is the floor under BenchmarkStage: the CPU one
// JetStream publish costs, client and embedded server together, with nothing
// else going on. b.N status events (about 200 bytes, each on its own
// subject with Nats-Msg-Id and an expected last subject sequence, as
// status.PublishNext writes them) go to SMS_STATUS from 64 goroutines, each
// waiting for its ack ("sync"), with up to 64 acks pending per goroutine
// ("async"), or asynchronously but waiting for each ack at once ("async1":
// as dear as sync, so the saving is in the writes in flight, not in the
// API). A passing message costs the stage five such writes (accepted,
// the duplicate window, the caps, the forward, queued) plus its share of a
// fetch and its ack.
//
//	go test -run '^$' -bench BenchmarkPublishFloor -benchtime 100000x -count 3 ./services/policy/
func BenchmarkPublishFloor(b *testing.B) {
	for _, mode := range []string{"sync", "async", "async1"} {
		b.Run(mode, func(b *testing.B) {
			srv := natstest.RunServer(b, b.TempDir())
			_, js := natstest.Connect(b, srv)
			ctx := context.Background()
			if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
				b.Fatal(err)
			}
			body := []byte(`{"id":"floor-0000000","status":"accepted","at":"2026-11-23T14:00:00Z","stage":"policy",` +
				`"campaign":"bench","callback_url":"https://example.com/hooks/sms","detail":"` + fmt.Sprintf("%080d", 0) + `"}`)
			const workers = 64
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			start := time.Now()
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var pending []jetstream.PubAckFuture
					for i := w; i < b.N; i += workers {
						id := fmt.Sprintf("floor-%07d", i)
						msg := &nats.Msg{Subject: "sms.status." + id, Data: body}
						opts := []jetstream.PublishOpt{jetstream.WithMsgID(id + ".accepted"), jetstream.WithExpectLastSequencePerSubject(0)}
						if mode == "sync" {
							if _, err := js.PublishMsg(ctx, msg, opts...); err != nil {
								errs <- err
								return
							}
							continue
						}
						f, err := js.PublishMsgAsync(msg, opts...)
						if err != nil {
							errs <- err
							return
						}
						if pending = append(pending, f); len(pending) == 64 || mode == "async1" {
							if err := awaitAll(pending); err != nil {
								errs <- err
								return
							}
							pending = pending[:0]
						}
					}
					if err := awaitAll(pending); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			cpu := cpuTime(b) - cpu0
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pubs/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/pub")
		})
	}
}

func awaitAll(fs []jetstream.PubAckFuture) error {
	for _, f := range fs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("no ack within 30s")
		}
	}
	return nil
}
