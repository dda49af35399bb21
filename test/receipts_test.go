package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/receipts"
	"github.com/smsflow/smsflow/services/smscsim"
)

// Receipts end to end, against the simulator over SMPP: a 3-part message
// all delivered, a 3-part message whose second part is undeliverable, a
// message whose only receipt is never final (UNKNOWN, so it times out), and
// a message whose receipt comes on a new session after the connection was
// dropped. Each ends in exactly one terminal status.
func TestReceiptsOfLongMessagesLostReceiptsAndANewSession(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{} // submits per destination, as Stat sees them
	const (
		allParts   = 1 // number index: a 3-part message, every part DELIVRD
		badPart    = 2 // a 3-part message, part 2 UNDELIV
		noFinal    = 3 // one part, receipt UNKNOWN: never final
		newSession = 4 // one part, its receipt after a reconnect
	)
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", ReceiptDelay: time.Second,
		Stat: func(dst string) string {
			mu.Lock()
			defer mu.Unlock()
			seen[dst]++
			switch {
			case dst == simDest(badPart) && seen[dst] == 2:
				return smscsim.StatUndeliverable
			case dst == simDest(noFinal):
				return smscsim.StatUnknown
			}
			return smscsim.StatDelivered
		}})
	p := setup(t, t.TempDir(), sim.Addr(), "[receipts]\nreceipt_timeout = \"3s\"\n")
	p.start()
	_, js := p.connect()
	log := watchStatuses(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	long := strings.Repeat("Long message text. ", 21) // 399 GSM characters: 3 parts of 153
	publish := func(id string, i int, text string) {
		body := fmt.Sprintf(`{"id":%q,"to":%q,"text":%q,"kind":"transactional"}`, id, number(i), text)
		if _, err := js.Publish(ctx, "sms.outbound", []byte(body), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	publish("r-all", allParts, long)
	publish("r-bad", badPart, long)
	publish("r-lost", noFinal, "no final receipt for me")
	log.waitTerminal(t, 30*time.Second, []string{"r-all", "r-bad"})

	natstest.Eventually(t, 10*time.Second, "want the 7 receipts of r-all, r-bad and r-lost acknowledged", func() bool { return sim.ReceiptsAcked() == 7 })

	// The receipt of r-new is due a second after its submit: drop the
	// connection in between, so it arrives on the link's next session.
	publish("r-new", newSession, "my receipt comes on another bind")
	natstest.Eventually(t, 10*time.Second, "want r-new submitted", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		for _, ev := range log.events["r-new"] {
			if ev.Status == status.Submitted {
				return true
			}
		}
		return false
	})
	sim.DropConnections()
	if b, a := sim.Binds(), sim.ReceiptsAcked(); b != 0 || a != 7 {
		t.Fatalf("after the drop: %d binds, %d receipts acknowledged; want 0 and 7 (r-new's not yet sent)", b, a)
	}
	term := log.waitTerminal(t, 30*time.Second, []string{"r-all", "r-bad", "r-lost", "r-new"})

	want := map[string]struct {
		status, reason string
		code, parts    int
	}{
		"r-all":  {status.Delivered, "", 0, 3},
		"r-bad":  {status.Undelivered, "", 5, 3}, // the simulator's err for UNDELIV is its message_state, 005
		"r-lost": {status.Expired, receipts.ReasonNoReceipt, 0, 1},
		"r-new":  {status.Delivered, "", 0, 1},
	}
	for id, w := range want {
		evs := term[id]
		if len(evs) != 1 || evs[0].Status != w.status || evs[0].Reason != w.reason || evs[0].Code != w.code || evs[0].Parts != w.parts {
			t.Errorf("%s: terminal events %+v, want exactly one %s (reason %q, code %d, parts %d)", id, evs, w.status, w.reason, w.code, w.parts)
		}
	}
	for i, n := range map[int]int{allParts: 3, badPart: 3, noFinal: 1, newSession: 1} {
		if got := sim.AcceptedTo(simDest(i)); got != n {
			t.Errorf("simulator accepted %d submits to %s, want %d", got, simDest(i), n)
		}
	}
	// r-new's receipt was acknowledged on the session bound after the drop.
	natstest.Eventually(t, 10*time.Second, "want 8 receipts acknowledged", func() bool { return sim.ReceiptsAcked() == 8 })
	for sample, n := range map[string]float64{
		`smsflow_receipts_parts_total{result="recorded"}`:         6, // every final part receipt of both long messages
		`smsflow_receipts_parts_total{result="duplicate"}`:        0,
		`smsflow_receipts_processed_total{result="delivered"}`:    2,
		`smsflow_receipts_processed_total{result="undelivered"}`:  1,
		`smsflow_receipts_processed_total{result="intermediate"}`: 1, // r-lost's UNKNOWN
		`smsflow_receipts_processed_total{result="orphan"}`:       0,
		`smsflow_receipts_states_total{state="delivered"}`:        6,
		`smsflow_receipts_states_total{state="undelivered"}`:      1,
		`smsflow_receipts_states_total{state="unknown"}`:          1,
		`smsflow_receipts_timeouts_total{result="expired"}`:       1,
	} {
		if got := p.metric(sample); got != n {
			t.Errorf("%s = %v, want %v", sample, got, n)
		}
	}
	// r-bad's third part comes after the message is final, or before: either
	// way the two delivered parts of r-bad are "part" or "duplicate", 2 in all,
	// and r-all's first two parts are "part".
	if got := p.metric(`smsflow_receipts_processed_total{result="part"}`) + p.metric(`smsflow_receipts_processed_total{result="duplicate"}`); got != 4 {
		t.Errorf("processed part + duplicate = %v, want 4", got)
	}
	p.stop()
}
