package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/caps"
	"github.com/smsflow/smsflow/pkg/dedup"
	"github.com/smsflow/smsflow/pkg/mo"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// capsClock is the fixed time of the caps in these tests: a run that
// crosses midnight must not start a new day halfway.
var capsClock = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// ruleConfig is what an instance's rules are made of.
type ruleConfig struct {
	limits    caps.Limits
	window    time.Duration
	blacklist rules.Blacklist
}

// instance is one policy process: its own connection, publisher, rules
// (with their own caches) and stage.
type instance struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	stage *Stage
	view  *optout.View
	stop  func()
}

// startInstance connects to srv and runs a policy stage with cfg's rules,
// its opt-out view and reader.
func startInstance(t *testing.T, srv *server.Server, cfg ruleConfig) *instance {
	t.Helper()
	nc, js := natstest.Connect(t, srv)
	ctx := context.Background()
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	kv := func(b string) jetstream.KeyValue {
		k, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	w, err := caps.NewWindow("UTC")
	if err != nil {
		t.Fatal(err)
	}
	view := optout.NewView(kv(streams.BucketOptOut), slog.New(slog.DiscardHandler))
	r := newRulesFor(cfg.blacklist, view, dedup.New(kv(streams.BucketDedup), cfg.window).WriteVia(js.Conn()), caps.NewCounter(kv(streams.BucketCaps), w, cfg.limits).WriteVia(js.Conn()))
	m := NewMetrics(prometheus.NewRegistry())
	log := slog.New(slog.DiscardHandler)
	s := New(js, pub, Chain(czRoutes(), Rules(r)), testOptions(), log, m)
	oo := NewOptOuts(js, optout.NewStore(kv(streams.BucketOptOut)), optout.NewKeywords([]string{"konec"}, nil), "CZ", log, m)
	natstest.Run(t, wait, view.Run)
	natstest.Run(t, wait, oo.Run)
	return &instance{nc: nc, js: js, stage: s, view: view, stop: run(t, s)}
}

// newRulesFor makes rules on the caps clock.
func newRulesFor(bl rules.Blacklist, view rules.OptOut, d *dedup.Window, c *caps.Counter) *rules.Rules {
	return &rules.Rules{Blacklist: bl, OptOut: view, Dedup: d, Caps: c, Now: func() time.Time { return capsClock }}
}

// setAckWait shortens the policy consumer's ack wait, so what a killed
// instance held comes back within the test.
func setAckWait(t *testing.T, js jetstream.JetStream, d time.Duration) {
	t.Helper()
	c, err := streams.Consumer(streams.Outbound, streams.ConsumerPolicy)
	if err != nil {
		t.Fatal(err)
	}
	c.AckWait = d
	if _, err := js.CreateOrUpdateConsumer(context.Background(), streams.Outbound, c); err != nil {
		t.Fatal(err)
	}
}

// publishAll publishes the envelopes with async publishes, a thousand in
// flight at most, and waits for every ack.
func publishAll(t testing.TB, js jetstream.JetStream, msgs []map[string]any) {
	t.Helper()
	var futures []jetstream.PubAckFuture
	settle := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("publish not acked within 30s")
			}
		}
		futures = futures[:0]
	}
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: "sms.outbound", Data: b}, jetstream.WithMsgID(m["id"].(string)))
		if err != nil {
			t.Fatal(err)
		}
		if futures = append(futures, f); len(futures) == 1000 {
			settle()
		}
	}
	settle()
}

// finals reads SMS_STATUS whole and returns each message's last event.
func finals(t *testing.T, js jetstream.JetStream) map[string]status.Event {
	t.Helper()
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, streams.Status, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, streams.Status)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]status.Event{}
	for read := uint64(0); read < info.State.Msgs; {
		b, err := c.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			var ev status.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatalf("status event %s: %v", m.Subject(), err)
			}
			out[ev.ID] = ev
		}
		if n == 0 {
			t.Fatalf("read %d of %d status events: %v", read, info.State.Msgs, b.Error())
		}
		read += uint64(n)
	}
	return out
}

// waitDrained waits until the policy consumer has nothing pending or unacked.
func waitDrained(t testing.TB, js jetstream.JetStream, d time.Duration) {
	t.Helper()
	c, err := js.Consumer(context.Background(), streams.Outbound, streams.ConsumerPolicy)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	deadline := time.Now().Add(d)
	for {
		if info, err = c.Info(context.Background()); err == nil && info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the policy consumer still has work: %+v, err %v", d, info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// capsRunSize is the number of messages of the caps runs: 10,000 (the
// acceptance size), or 2,000 under the race detector, which makes the stage
// several times slower (CI runs -race on 2 cores). TEST_POLICY_CAPS_MESSAGES
// sets it either way; numbers are a twentieth of it, so the exact counts
// checked are the same at every size:
//
//	TEST_POLICY_CAPS_MESSAGES=10000 go test -race -run TestThreeInstances ./services/policy/
func capsRunSize(t *testing.T) int {
	n := 10_000
	if raceEnabled {
		n = 2_000
	}
	if v := os.Getenv("TEST_POLICY_CAPS_MESSAGES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			t.Fatalf("TEST_POLICY_CAPS_MESSAGES=%q: want a whole number >= 20", v)
		}
	}
	return n
}

// TestThreeInstancesCapEveryNumberExactly sends 10,000 marketing messages to
// 500 numbers (20 each) through three policy instances with a cap of 3 a
// day: each number gets exactly 3 queued and 17 daily_cp, also when one
// instance dies halfway (its connection closed with messages unacked).
func TestThreeInstancesCapEveryNumberExactly(t *testing.T) {
	for _, kill := range []bool{false, true} {
		name := "all three instances run to the end"
		if kill {
			name = "one instance is killed halfway"
		}
		t.Run(name, func(t *testing.T) {
			total := capsRunSize(t)
			numbers := total / 20
			const daily = 3
			srv := natstest.RunServer(t, t.TempDir())
			_, js := natstest.Connect(t, srv)
			if err := streams.Apply(context.Background(), js, []string{"default", "cz"}); err != nil {
				t.Fatal(err)
			}
			setAckWait(t, js, 5*time.Second)
			cfg := ruleConfig{limits: caps.Limits{Daily: daily, Weekly: 10}, window: 10 * time.Minute}
			var insts []*instance
			for range 3 {
				insts = append(insts, startInstance(t, srv, cfg))
			}
			msgs := make([]map[string]any, total)
			for i := range msgs {
				msgs[i] = map[string]any{"id": fmt.Sprintf("cap-%05d", i), "to": fmt.Sprintf("+420600%06d", i%numbers),
					"text": fmt.Sprintf("offer %d", i), "kind": "marketing"}
			}
			publishAll(t, js, msgs)
			if kill {
				victim := insts[0]
				natstest.Eventually(t, 60*time.Second, "the first instance finishes a tenth of the messages", func() bool {
					return sum(victim.stage.m.out, results...) >= float64(total/10)
				})
				victim.nc.Close() // no ack, no nak: what it holds comes back after the ack wait
				victim.stop()
			}
			waitDrained(t, js, 120*time.Second)
			if kill {
				// What the dead instance held came back: the consumer
				// delivered more times than there are messages.
				c, err := js.Consumer(context.Background(), streams.Outbound, streams.ConsumerPolicy)
				if err != nil {
					t.Fatal(err)
				}
				if info, err := c.Info(context.Background()); err != nil || info.Delivered.Consumer <= uint64(total) {
					t.Fatalf("consumer deliveries %+v, %v: want more than %d, some redelivered after the kill", info.Delivered, err, total)
				}
			}

			got := finals(t, js)
			queuedPer := map[string]int{}
			count := map[string]int{}
			for i, m := range msgs {
				id := m["id"].(string)
				ev, ok := got[id]
				if !ok {
					t.Fatalf("message %d (%s) has no status", i, id)
				}
				key := ev.Status
				if ev.Reason != "" {
					key += "/" + ev.Reason
				}
				count[key]++
				if ev.Status == status.Queued {
					queuedPer[m["to"].(string)]++
				}
			}
			want := map[string]int{status.Queued: numbers * daily, status.Rejected + "/" + status.ReasonDailyCP: total - numbers*daily}
			if fmt.Sprint(count) != fmt.Sprint(want) {
				t.Fatalf("final statuses %v, want %v", count, want)
			}
			for n, q := range queuedPer {
				if q != daily {
					t.Errorf("%s: %d queued, want %d", n, q, daily)
				}
			}
			if len(queuedPer) != numbers {
				t.Errorf("%d numbers got a message, want %d", len(queuedPer), numbers)
			}
			s, err := js.Stream(context.Background(), streams.Egress)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != uint64(numbers*daily) {
				t.Errorf("SMS_EGRESS holds %d messages, want %d (3 per number, none twice)", info.State.Msgs, numbers*daily)
			}
			done, retries := 0.0, 0.0
			for _, in := range insts {
				done += sum(in.stage.m.out, results...)
				retries += testutil.ToFloat64(in.stage.m.retries)
			}
			t.Logf("%d messages, %d numbers, kill=%v: %v; the instances settled %v (redeliveries included), retried %v", total, numbers, kill, count, done, retries)
		})
	}
}

func TestAThousandIdenticalTextsToOneNumberQueueOne(t *testing.T) {
	srv := natstest.RunServer(t, t.TempDir())
	_, js := natstest.Connect(t, srv)
	if err := streams.Apply(context.Background(), js, []string{"default", "cz"}); err != nil {
		t.Fatal(err)
	}
	in := startInstance(t, srv, ruleConfig{window: 10 * time.Minute})
	const n = 1000
	msgs := make([]map[string]any, n)
	for i := range msgs {
		msgs[i] = map[string]any{"id": fmt.Sprintf("same-%04d", i), "to": "+420600000001", "text": "Black Friday: 50% off", "kind": "marketing"}
	}
	publishAll(t, js, msgs)
	waitDrained(t, js, 60*time.Second)
	count := map[string]int{}
	for _, ev := range finals(t, js) {
		count[ev.Status+"/"+ev.Reason]++
	}
	if count[status.Queued+"/"] != 1 || count[status.Rejected+"/"+status.ReasonDuplicate] != n-1 || len(count) != 2 {
		t.Fatalf("final statuses %v, want 1 queued and %d rejected/duplicate", count, n-1)
	}
	if got := testutil.ToFloat64(in.stage.m.rejected.WithLabelValues(status.ReasonDuplicate)); got != n-1 {
		t.Errorf("rejected_total{reason=duplicate} = %v, want %d", got, n-1)
	}
}

// inbound publishes a reply on sms.inbound.<link>, as egress stores a deliver_sm.
func inbound(t *testing.T, js jetstream.JetStream, from, text string) {
	t.Helper()
	b, err := json.Marshal(mo.Message{Link: "sim1", ReceivedAt: time.Now().UTC(), From: from, To: "smsflow", Text: text})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "sms.inbound.sim1", Data: b}); err != nil {
		t.Fatal(err)
	}
}

func TestStopOptsOutOfMarketingAndStartOptsBackIn(t *testing.T) {
	srv := natstest.RunServer(t, t.TempDir())
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	if err := streams.Apply(ctx, js, []string{"default", "cz"}); err != nil {
		t.Fatal(err)
	}
	a := startInstance(t, srv, ruleConfig{window: 10 * time.Minute})
	b := startInstance(t, srv, ruleConfig{window: 10 * time.Minute}) // a second instance must see it too
	kv, err := js.KeyValue(ctx, streams.BucketOptOut)
	if err != nil {
		t.Fatal(err)
	}
	store := optout.NewStore(kv)
	e := env{js: js}
	e.pub, _ = status.NewPublisher(ctx, js)
	const n = "+420600000001"
	waitOptedOut := func(want bool) {
		t.Helper()
		natstest.Eventually(t, wait, fmt.Sprintf("sms_optout says %s opted out = %v", n, want), func() bool {
			out, err := store.OptedOut(ctx, n)
			return err == nil && out == want
		})
		// Each instance's view follows the bucket by a watch: wait for both.
		for i, in := range []*instance{a, b} {
			natstest.Eventually(t, wait, fmt.Sprintf("instance %d's view says opted out = %v", i, want), func() bool {
				out, err := in.view.OptedOut(ctx, n)
				return err == nil && out == want
			})
		}
	}
	send := func(id, kind string) status.Event {
		t.Helper()
		publishJSON(t, e, map[string]any{"id": id, "to": n, "text": "text of " + id, "kind": kind})
		h := waitSettled(t, e, id)
		return h[len(h)-1]
	}

	inbound(t, js, "420600000001", "  Stóp! ")
	waitOptedOut(true)
	for i, in := range []string{"after-stop-a", "after-stop-b"} {
		if ev := send(in, "marketing"); ev.Status != status.Rejected || ev.Reason != status.ReasonOptedOut {
			t.Fatalf("marketing message %d after STOP: %+v, want rejected/opted_out", i, ev)
		}
	}
	if ev := send("otp-1", "transactional"); ev.Status != status.Queued {
		t.Fatalf("transactional message after STOP: %+v, want queued", ev)
	}
	inbound(t, js, "420600000002", "please stop sending") // not a keyword
	inbound(t, js, "420600000001", "start")
	waitOptedOut(false)
	if ev := send("after-start", "marketing"); ev.Status != status.Queued {
		t.Fatalf("marketing message after START: %+v, want queued", ev)
	}
	inbound(t, js, "+420600000001", "KONEC") // a configured stop word
	waitOptedOut(true)
	if ev := send("after-konec", "marketing"); ev.Reason != status.ReasonOptedOut {
		t.Fatalf("marketing message after a configured stop word: %+v, want rejected/opted_out", ev)
	}
	if out, _ := store.OptedOut(ctx, "+420600000002"); out {
		t.Error("a reply that only contains \"stop\" opted its sender out")
	}
	var stops, starts, others float64
	for _, in := range []*instance{a, b} {
		stops += testutil.ToFloat64(in.stage.m.inbound.WithLabelValues("stop"))
		starts += testutil.ToFloat64(in.stage.m.inbound.WithLabelValues("start"))
		others += testutil.ToFloat64(in.stage.m.inbound.WithLabelValues("other"))
	}
	if stops != 2 || starts != 1 || others != 1 {
		t.Errorf("inbound_total stop/start/other = %v/%v/%v, want 2/1/1", stops, starts, others)
	}
}
