package egress

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// The done-when test of issue 5: the SMSC drops the connection right after
// every 500th accepted submit, before answering it, during a 5,000-message
// run. Every message ends with exactly one outcome, nothing is left in the
// stream, every receipt is stored, and the submits the SMSC saw twice are
// at most window x reconnects.
func TestKillingTheConnectionEvery500SubmitsLosesNothingAndDuplicatesAtMostWindowTimesReconnects(t *testing.T) {
	n, every := 5000, 500
	if raceEnabled || testing.Short() {
		// The same shape at a fifth of the size: 10 drops still, and the
		// package's tests stay under a minute with -race on a busy machine.
		n, every = 1000, 100
	}
	const window = 10
	e := newEnv(t, smscsim.Options{DropEvery: every})
	e.publish(0, n, nil)
	start := time.Now()
	r := e.run(e.linkOpts(5000, 200, window), fastRetries(10))
	natstest.Eventually(t, 60*time.Second, "want every message accepted by the SMSC", func() bool { return e.acceptedEach(n) })
	natstest.Eventually(t, wait, "want SMS_EGRESS empty", func() bool { return e.streamMsgs(streams.Egress) == 0 })
	took := time.Since(start)
	accepted, drops, dups := e.sim.Accepted(), e.sim.Drops(), e.sim.Duplicates()
	// Every accepted submit (duplicates included) has its receipt stored in
	// SMS_DLR once, and acknowledged: none lost to a dropped connection.
	natstest.Eventually(t, wait, "want a receipt stored for every accepted submit", func() bool {
		return e.sim.ReceiptsAcked() == accepted && e.streamMsgs(streams.DLR) >= uint64(accepted)
	})
	r.stop()

	all := e.allEvents()
	outcomes := map[string]int{}
	unknown := 0
	for i := range n {
		h := all[msgID(i)]
		if len(h) == 0 {
			t.Fatalf("%s has no status", msgID(i))
		}
		final := 0
		for _, ev := range h {
			switch ev.Status {
			case status.Submitted, status.Failed, status.Expired:
				final++
				outcomes[ev.Status]++
			case status.SubmitUnknown:
				unknown++
			}
		}
		if final != 1 || h[len(h)-1].Status != status.Submitted {
			t.Fatalf("%s: %d outcomes, last %q; want exactly one, submitted", msgID(i), final, h[len(h)-1].Status)
		}
	}
	if outcomes[status.Submitted] != n {
		t.Fatalf("outcomes %v, want %d submitted", outcomes, n)
	}
	if drops < n/every || drops > accepted/every {
		t.Fatalf("%d drops for %d accepted submits, want %d", drops, accepted, accepted/every)
	}
	if accepted != n+dups {
		t.Fatalf("accepted %d = %d messages + %d duplicates? no", accepted, n, dups)
	}
	if dups > window*drops {
		t.Fatalf("%d submits seen twice, want at most window x reconnects = %d x %d", dups, window, drops)
	}
	if dups < drops {
		t.Fatalf("%d duplicates for %d drops: each drop leaves one accepted submit unanswered, which is sent again", dups, drops)
	}
	if risked := r.count(r.m.duplicatesRisked, link); risked < float64(dups) {
		t.Fatalf("duplicates_risked_total = %v, want >= the %d duplicates", risked, dups)
	}
	// Every submit made again after a submit_unknown is counted by the
	// resubmit: at least the duplicates, at most the window per drop.
	resubmits := r.count(r.m.resubmitsUnknown, link)
	if resubmits < float64(dups) || resubmits > float64(window*drops) {
		t.Fatalf("resubmits_unknown_total = %v, want between the %d duplicates and window x reconnects = %d", resubmits, dups, window*drops)
	}
	t.Logf("drop every %d: %d messages in %v: %d submits accepted, %d reconnects, %d submits seen twice (bound %d), %d submit_unknown events, %v resubmits counted, %d receipts stored",
		every, n, took.Round(time.Millisecond), accepted, drops, dups, window*drops, unknown, resubmits, e.sim.ReceiptsAcked())
}

// allEvents reads the whole of SMS_STATUS once: every message's events in
// order, by message id.
func (e *env) allEvents() map[string][]status.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	total := e.streamMsgs(streams.Status)
	s, err := e.js.Stream(ctx, streams.Status)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string][]status.Event{}
	for got := uint64(0); got < total; {
		b, err := c.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range b.Messages() {
			var ev status.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				e.t.Fatalf("status event %s: %v", m.Data(), err)
			}
			out[ev.ID] = append(out[ev.ID], ev)
			got++
		}
		if ctx.Err() != nil {
			e.t.Fatalf("read %d of %d status events", got, total)
		}
	}
	return out
}
