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

// Stop the pipeline with SIGTERM while messages are still queued, start it
// again on the same data dir: every message still ends delivered, and the
// simulator saw none twice.
func TestSIGTERMWithMessagesQueuedLosesAndDoublesNothing(t *testing.T) {
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", ReceiptDelay: 300 * time.Millisecond})
	dataDir := t.TempDir()
	// 50 submits/s: 400 messages take 8 s, so the stop lands mid-run.
	p := setup(t, dataDir, sim.Addr(), "")
	p.env = []string{"SMSFLOW_LINKS__L1__RATE=50", "SMSFLOW_LINKS__L1__BURST=5"}
	p.start()
	_, js := p.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 400
	var ids []string
	for i := range n {
		id := fmt.Sprintf("r-%04d", i)
		body := fmt.Sprintf(`{"id":%q,"to":%q,"text":"restart %d"}`, id, number(i), i)
		if _, err := js.Publish(ctx, "sms.outbound", []byte(body), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	natstest.Eventually(t, 30*time.Second, "want 60 submits before the stop", func() bool { return sim.Accepted() >= 60 })
	p.stop()
	before := sim.Accepted()
	if before >= n {
		t.Fatalf("all %d messages were sent before the stop: the test proves nothing", n)
	}
	t.Logf("stopped after %d of %d submits", before, n)

	p.start() // same config, same data dir, same ports
	_, js = p.connect()
	log := watchStatuses(t, js)
	term := log.waitTerminal(t, 90*time.Second, ids)
	for _, id := range ids {
		if evs := term[id]; len(evs) != 1 || evs[0].Status != status.Delivered {
			t.Errorf("%s: terminal events %+v, want exactly one delivered", id, evs)
		}
	}
	if got := sim.Accepted(); got != n {
		t.Errorf("simulator accepted %d submits for %d messages: a restart must not double or lose any", got, n)
	}
	for i := range n {
		if c := sim.AcceptedTo(simDest(i)); c != 1 {
			t.Errorf("%s submitted %d times, want 1", number(i), c)
		}
	}
	p.stop()
}
