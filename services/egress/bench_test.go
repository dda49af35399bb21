package egress

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// BenchmarkPacing runs the egress stage alone (1 or 3 instances, each on its
// own NATS connection, sharing one link) against a simulator with a strict
// rolling 1,000 ms limit equal to the link's rate, with a backlog of
// rate×seconds messages already on SMS_EGRESS. It reports, from the
// simulator's own record: achieved/configured over the busy period (first to
// last accepted submit), the most submits in any 1,000 ms (max_window, never
// above the rate), throttled submits, and the pacing KV operations (reads +
// writes of sms_pacing, all instances) per submitted message.
//
//	go test -run '^$' -bench BenchmarkPacing -benchtime 1x ./services/egress/
func BenchmarkPacing(b *testing.B) {
	const seconds = 5
	for _, rate := range []int{50, 500, 2000} {
		for _, instances := range []int{1, 3} {
			b.Run(fmt.Sprintf("rate=%d/instances=%d", rate, instances), func(b *testing.B) {
				for range b.N {
					benchPacing(b, rate, instances, rate*seconds)
				}
			})
		}
	}
}

func benchPacing(b *testing.B, rate, instances, n int) {
	b.StopTimer()
	srv := natstest.RunServer(b, b.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, js := natstest.Connect(b, srv)
	if err := streams.Apply(ctx, js, []string{pool}); err != nil {
		b.Fatal(err)
	}
	sim := smscsim.NewServer(b, smscsim.Options{SystemID: user, Password: passwd, MaxPerSecond: rate, ReceiptDelay: 10 * time.Millisecond})
	// As test/pacing_test.go configures it: burst 1, a window of rate/10.
	lo := LinkOptions{Name: link, Pool: pool, Rate: rate, Burst: 1, Source: "Eshop",
		SMPP: smpplinkConfig(sim.Addr(), max(10, rate/10))}

	const chunk = 256 // async publishes in flight
	for lo := 0; lo < n; lo += chunk {
		var acks []jetstream.PubAckFuture
		for i := lo; i < min(lo+chunk, n); i++ {
			m := envelope.Message{ID: msgID(i), To: dst(i), Text: fmt.Sprintf("message %d", i), Pool: pool, AcceptedAt: time.Now().UTC()}
			data, err := envelope.Encode(m)
			if err != nil {
				b.Fatal(err)
			}
			f, err := js.PublishAsync(streams.EgressSubject(pool), data, jetstream.WithMsgID(m.ID))
			if err != nil {
				b.Fatal(err)
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			case <-ctx.Done():
				b.Fatal("backlog not stored")
			}
		}
	}

	var stages []*Stage
	var stops []func()
	for range instances {
		_, ijs := natstest.Connect(b, srv)
		pub, err := status.NewPublisher(ctx, ijs)
		if err != nil {
			b.Fatal(err)
		}
		s := New(ijs, pub, []LinkOptions{lo}, fastRetries(10), slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
		stages = append(stages, s)
		stops = append(stops, natstest.Run(b, time.Minute, s.Run))
	}
	b.StartTimer()
	natstest.Eventually(b, time.Duration(n/rate)*3*time.Second+30*time.Second, "want every message accepted",
		func() bool { return sim.Accepted() >= n })
	b.StopTimer()
	for _, stop := range stops {
		stop()
	}

	ts := make([]time.Time, 0, n)
	for _, s := range sim.Submits() {
		ts = append(ts, s.At)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	busy := ts[len(ts)-1].Sub(ts[0])
	achieved := float64(len(ts)-1) / busy.Seconds()
	var kv, wasted, late int64
	for _, s := range stages {
		for _, st := range s.PacingStats() {
			kv += st.KVReads + st.KVWrites
			wasted += st.Wasted
			late += st.Late
		}
	}
	b.ReportMetric(achieved/float64(rate), "achieved/configured")
	b.ReportMetric(float64(sim.MaxInWindow(time.Second)), "max_window")
	b.ReportMetric(float64(sim.Throttled()), "throttled")
	b.ReportMetric(float64(kv)/float64(len(ts)), "kv_ops/msg")
	b.ReportMetric(float64(wasted)/float64(len(ts)), "wasted_slots/msg")
	b.ReportMetric(float64(late)/float64(len(ts)), "late_slots/msg")
	b.ReportMetric(0, "ns/op")
	if sim.Throttled() > 0 || sim.MaxInWindow(time.Second) > rate {
		b.Errorf("%d throttled, %d in one 1,000 ms window at %d/s", sim.Throttled(), sim.MaxInWindow(time.Second), rate)
	}
}

func smpplinkConfig(addr string, window int) smpplink.Config {
	return smpplink.Config{Name: link, Addr: addr, SystemID: user, Password: passwd,
		Window: window, RespTimeout: 2 * time.Second, BindInterval: 100 * time.Millisecond}
}
