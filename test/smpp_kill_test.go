package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// The issue 5 link keys work through the binary: TLS with the simulator's
// self-signed CA, two tx_rx sessions (4 binds), SAR splitting. Every message
// is delivered once and the SMSC saw every text as sent, long ones and emoji
// included.
func TestALinkOverTLSWithTwoTxRxSessionsAndSARDeliversEveryText(t *testing.T) {
	srvTLS, caPEM, err := smscsim.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", TLS: srvTLS})
	p := setup(t, t.TempDir(), sim.Addr(), "")
	p.env = []string{"SMSFLOW_LINKS__L1__TLS=true", "SMSFLOW_LINKS__L1__TLS_CA=" + ca, "SMSFLOW_LINKS__L1__SESSIONS=2",
		"SMSFLOW_LINKS__L1__BIND_MODE=tx_rx", "SMSFLOW_LINKS__L1__SPLIT=sar"}
	p.start()
	natstest.Eventually(t, 10*time.Second, "want 4 binds at the simulator", func() bool { return sim.Binds() == 4 })
	_, js := p.connect()
	log := watchStatuses(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	texts := []string{"plain", `€ [ ] { } ~ \ ^ |`, strings.Repeat("long GSM text ", 30), "Děkujeme 😀", strings.Repeat("😀 emoji ", 30)}
	parts := []int{1, 1, 3, 1, 5} // 420 GSM septets: 3 parts; 270 UTF-16 units: 5 parts
	ids := make([]string, len(texts))
	for i, text := range texts {
		ids[i] = fmt.Sprintf("tls-%d", i)
		body, _ := json.Marshal(map[string]string{"id": ids[i], "to": number(i), "text": text})
		if _, err := js.Publish(ctx, "sms.outbound", body, jetstream.WithMsgID(ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	term := log.waitTerminal(t, 30*time.Second, ids)
	for i, id := range ids {
		if evs := term[id]; len(evs) != 1 || evs[0].Status != status.Delivered || evs[0].Parts != parts[i] {
			t.Errorf("%s: terminal %+v, want one delivered in %d parts", id, evs, parts[i])
		}
	}
	got := map[string]smscsim.Message{}
	for _, m := range sim.Messages() {
		got[m.Dest] = m
	}
	for i, text := range texts {
		if m := got[simDest(i)]; m.Text != text || m.Parts != parts[i] {
			t.Errorf("the SMSC saw %q in %d parts, want %q in %d", m.Text, m.Parts, text, parts[i])
		}
	}
	if len(sim.Messages()) != len(texts) || sim.Accepted() != 11 {
		t.Errorf("%d messages in %d submits; want %d in 11", len(sim.Messages()), sim.Accepted(), len(texts))
	}
	natstest.Eventually(t, 10*time.Second, "want the 11 receipts acknowledged", func() bool { return sim.ReceiptsAcked() == 11 })
	p.stop()
}
