package policy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// wait bounds every poll of these tests.
const wait = 10 * time.Second

// env is a JetStream server with smsflow's streams, and a status publisher.
type env struct {
	js  jetstream.JetStream
	pub *status.Publisher
}

func newEnv(t *testing.T) env {
	t.Helper()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx := context.Background()
	if err := streams.Apply(ctx, js, []string{"default", "cz"}); err != nil {
		t.Fatal(err)
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return env{js: js, pub: pub}
}

// testOptions retry fast, so a retried message comes back within a test.
func testOptions() Options {
	return Options{Region: "CZ", MaxChars: 1000, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Grace: 5 * time.Second}
}

// newStage makes a stage on e with its own metrics registry.
func newStage(t *testing.T, e env, check Check, opts Options) *Stage {
	t.Helper()
	return New(e.js, e.pub, check, opts, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
}

// run starts s.Run; see natstest.Run.
func run(t *testing.T, s *Stage) (stop func()) {
	t.Helper()
	return natstest.Run(t, wait, s.Run)
}

// publish puts body on sms.outbound without a Nats-Msg-Id, as a producer that
// does not dedup would, and returns its stream sequence.
func publish(t *testing.T, e env, body []byte) uint64 {
	t.Helper()
	ack, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: "sms.outbound", Data: body})
	if err != nil {
		t.Fatalf("publish %.60q: %v", body, err)
	}
	return ack.Sequence
}

func publishJSON(t *testing.T, e env, v any) uint64 {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return publish(t, e, b)
}

// derivedID is the id the stage gives the message at seq of SMS_OUTBOUND
// when it has no usable id of its own.
func derivedID(t *testing.T, e env, seq uint64) string {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("outbound seq %d: %v", seq, err)
	}
	return envelope.IDFor(envelope.SeqKey(streams.Outbound, seq), raw.Time)
}

// history is every status event of id so far, oldest first; nil when none.
func history(t *testing.T, e env, id string) []status.Event {
	t.Helper()
	h, err := e.pub.History(context.Background(), id, 100)
	if errors.Is(err, status.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("history of %s: %v", id, err)
	}
	return h
}

func statuses(h []status.Event) []string {
	out := make([]string, len(h))
	for i, ev := range h {
		out[i] = ev.Status
	}
	return out
}

// settled reports whether the message's history ends in queued or a terminal status.
func settled(h []status.Event) bool {
	if len(h) == 0 {
		return false
	}
	last := h[len(h)-1].Status
	return last == status.Queued || status.Terminal(last)
}

// waitSettled waits until id is queued or terminal, and returns its history.
func waitSettled(t *testing.T, e env, id string) []status.Event {
	t.Helper()
	var h []status.Event
	natstest.Eventually(t, wait, "message "+id+" is queued or terminal", func() bool {
		h = history(t, e, id)
		return settled(h)
	})
	return h
}

// egressMsg is one message of SMS_EGRESS.
type egressMsg struct {
	subject string
	msgID   string
	m       envelope.Message
	raw     map[string]json.RawMessage
}

// egress reads every message of SMS_EGRESS without consuming it.
func egress(t *testing.T, e env) []egressMsg {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, streams.Egress)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []egressMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("egress seq %d: %v", seq, err)
		}
		m, err := envelope.Decode(raw.Data)
		if err != nil {
			t.Fatalf("egress seq %d does not decode: %v", seq, err)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw.Data, &fields); err != nil {
			t.Fatal(err)
		}
		out = append(out, egressMsg{subject: raw.Subject, msgID: raw.Header.Get(jetstream.MsgIDHeader), m: m, raw: fields})
	}
	return out
}

// egressOf is the messages of SMS_EGRESS with id.
func egressOf(t *testing.T, e env, id string) []egressMsg {
	t.Helper()
	var out []egressMsg
	for _, m := range egress(t, e) {
		if m.m.ID == id {
			out = append(out, m)
		}
	}
	return out
}

// drained waits until the policy consumer has nothing pending or unacked.
func drained(t *testing.T, e env) {
	t.Helper()
	var last *jetstream.ConsumerInfo
	natstest.Eventually(t, wait, "the policy consumer has nothing pending or unacked", func() bool {
		c, err := e.js.Consumer(context.Background(), streams.Outbound, streams.ConsumerPolicy)
		if err != nil {
			t.Fatal(err)
		}
		last, err = c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return last.NumAckPending == 0 && last.NumPending == 0
	})
}

// sum adds the series of a counter vector over the label values given.
func sum(v *prometheus.CounterVec, labels ...string) float64 {
	total := 0.0
	for _, l := range labels {
		total += testutil.ToFloat64(v.WithLabelValues(l))
	}
	return total
}

var (
	results = []string{"queued", "rejected", "expired", "already_handled"}
	reasons = []string{status.ReasonInvalid, status.ReasonBlacklist, status.ReasonOptedOut, status.ReasonDuplicate,
		status.ReasonDailyCP, status.ReasonWeeklyCP, status.ReasonNoRoute}
)

// checkMetricsAddUp checks that the stage finished exactly n messages, and
// that its rejections by reason add up to its rejected result.
func checkMetricsAddUp(t *testing.T, m *Metrics, n int) {
	t.Helper()
	if got := sum(m.out, results...); got != float64(n) {
		t.Errorf("messages_total over results = %v, want %d (one per message sent)", got, n)
	}
	if got, want := sum(m.rejected, reasons...), testutil.ToFloat64(m.out.WithLabelValues("rejected")); got != want {
		t.Errorf("rejected_total over reasons = %v, want messages_total{result=rejected} = %v", got, want)
	}
}
