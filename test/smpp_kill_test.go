package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
)

// The done-when test of issue 5, end to end: the SMSC drops every connection
// right after every 500th accepted submit (its submit_sm_resp never sent)
// during a 5,000-message run through the whole pipeline. Every message ends
// in exactly one terminal status (delivered, by its receipt), and the submits
// the SMSC saw twice are at most window x reconnects.
func TestKillingTheSMPPConnectionEvery500SubmitsEndsEveryMessageOnce(t *testing.T) {
	const n, every, window = 5000, 500, 10
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", DropEvery: every})
	p := setup(t, t.TempDir(), sim.Addr(), "")
	p.env = []string{"SMSFLOW_LINKS__L1__RATE=2000", "SMSFLOW_LINKS__L1__BURST=100", fmt.Sprintf("SMSFLOW_LINKS__L1__WINDOW=%d", window)}
	p.start()
	_, js := p.connect()
	log := watchStatuses(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("kill-%05d", i)
		body := fmt.Sprintf(`{"id":%q,"to":%q,"text":"message %d"}`, ids[i], number(i), i)
		if _, err := js.PublishAsync("sms.outbound", []byte(body), jetstream.WithMsgID(ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing 5,000 messages did not complete")
	}
	term := log.waitTerminal(t, 90*time.Second, ids)
	took := time.Since(start)

	counts := map[string]int{}
	for _, id := range ids {
		evs := term[id]
		if len(evs) != 1 {
			t.Fatalf("%s: %d terminal events %+v, want exactly one", id, len(evs), evs)
		}
		counts[evs[0].Status]++
	}
	if counts[status.Delivered] != n {
		t.Fatalf("terminal statuses %v, want all %d delivered", counts, n)
	}
	accepted, drops, dups := sim.Accepted(), sim.Drops(), sim.Duplicates()
	natstest.Eventually(t, 10*time.Second, "want every receipt acknowledged", func() bool { return sim.ReceiptsAcked() == accepted })
	missing := 0
	for i := range n {
		if sim.AcceptedTo(simDest(i)) == 0 {
			missing++
		}
	}
	if missing != 0 || accepted != n+dups {
		t.Fatalf("%d messages never accepted; %d submits accepted, want %d messages + %d duplicates", missing, accepted, n, dups)
	}
	if drops < n/every || dups > window*drops {
		t.Fatalf("%d reconnects, %d submits seen twice: want >= %d reconnects and at most window x reconnects = %d", drops, dups, n/every, window*drops)
	}
	t.Logf("%d messages delivered in %v: %d submits accepted, %d reconnects, %d submits seen twice (bound window x reconnects = %d), %d receipts acknowledged",
		n, took.Round(time.Millisecond), accepted, drops, dups, window*drops, sim.ReceiptsAcked())
	p.stop()
}
