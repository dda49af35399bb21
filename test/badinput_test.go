package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
)

// badInputs are bodies no one should send to sms.outbound. Those with an id
// the pipeline can read are rejected under it; the others under an id made
// from their stream position.
func badInputs(round int) (withID map[string][]byte, withoutID [][]byte) {
	id := func(what string) string { return fmt.Sprintf("bad-%s-%d", what, round) }
	to := number(900000 + round)
	withID = map[string][]byte{
		id("to-number"):     fmt.Appendf(nil, `{"id":%q,"to":420600000001,"text":"wrong type"}`, id("to-number")),
		id("text-array"):    fmt.Appendf(nil, `{"id":%q,"to":%q,"text":["a","b"]}`, id("text-array"), to),
		id("kind-number"):   fmt.Appendf(nil, `{"id":%q,"to":%q,"text":"hi","kind":7}`, id("kind-number"), to),
		id("ttl-garbage"):   fmt.Appendf(nil, `{"id":%q,"to":%q,"text":"hi","ttl":"soon"}`, id("ttl-garbage"), to),
		id("huge"):          fmt.Appendf(nil, `{"id":%q,"to":%q,"text":%q}`, id("huge"), to, strings.Repeat("A", 1<<20-200)),
		id("letters"):       fmt.Appendf(nil, `{"id":%q,"to":"+42060abc0001","text":"hi"}`, id("letters")),
		id("empty-text"):    fmt.Appendf(nil, `{"id":%q,"to":%q,"text":""}`, id("empty-text"), to),
		id("no-to"):         fmt.Appendf(nil, `{"id":%q,"text":"nobody"}`, id("no-to")),
		id("whitespace-to"): fmt.Appendf(nil, `{"id":%q,"to":"   ","text":"hi"}`, id("whitespace-to")),
	}
	withoutID = [][]byte{
		// Not UTF-8: not JSON, so its id is not trusted either.
		fmt.Appendf(nil, `{"id":%q,"to":%q,"text":"bad \xff\xfe bytes"}`, id("utf8"), to),
		[]byte(`not json at all`),
		[]byte(``),
		[]byte(`null`),
		[]byte(`[1,2,3]`),
		[]byte(`{"id":"has space","to":"+420600000001","text":"bad id"}`),
		[]byte(`{"to":"+420600000001","text":`),
		{0x00, 0xff, 0x13, 0x37, '{', '}'},
		fmt.Appendf(nil, `{"to":%q,"text":"x","id":%d}`, to, round),
	}
	return withID, withoutID
}

// Garbage on sms.outbound, mixed with good messages: every good one is
// delivered, every bad one is rejected (invalid) with a reason, exactly
// once, and the policy consumer ends with nothing pending.
func TestGarbageOnOutboundIsRejectedAndNeverStallsTheConsumer(t *testing.T) {
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e"})
	p := setup(t, t.TempDir(), sim.Addr(), "")
	p.env = []string{"SMSFLOW_LINKS__L1__RATE=5000", "SMSFLOW_LINKS__L1__BURST=100", "SMSFLOW_LOG__LEVEL=warn"}
	p.start()
	_, js := p.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const rounds, goodPerRound = 10, 50
	var good, badIDs []string
	badWithoutID := 0
	pub := func(data []byte, msgID string) {
		t.Helper()
		var opts []jetstream.PublishOpt
		if msgID != "" {
			opts = append(opts, jetstream.WithMsgID(msgID))
		}
		if _, err := js.Publish(ctx, "sms.outbound", data, opts...); err != nil {
			t.Fatalf("publish %.60q: %v", data, err)
		}
	}
	for r := range rounds {
		withID, withoutID := badInputs(r)
		for id, body := range withID {
			pub(body, "")
			badIDs = append(badIDs, id)
		}
		for _, body := range withoutID {
			pub(body, "")
			badWithoutID++
		}
		for i := range goodPerRound {
			n := r*goodPerRound + i
			id := fmt.Sprintf("good-%04d", n)
			pub(fmt.Appendf(nil, `{"id":%q,"to":%q,"text":"good %d"}`, id, number(n), n), id)
			good = append(good, id)
		}
	}

	log := watchStatuses(t, js)
	term := log.waitTerminal(t, 90*time.Second, append(append([]string{}, good...), badIDs...))
	for _, id := range good {
		if evs := term[id]; len(evs) != 1 || evs[0].Status != status.Delivered {
			t.Errorf("good %s: terminal events %+v, want exactly one delivered", id, evs)
		}
	}
	for _, id := range badIDs {
		if evs := term[id]; len(evs) != 1 || evs[0].Status != status.Rejected || evs[0].Reason != status.ReasonInvalid || evs[0].Detail == "" {
			t.Errorf("bad %s: terminal events %+v, want exactly one rejected, reason invalid, with a detail", id, evs)
		}
	}
	known := map[string]bool{}
	for _, id := range append(append([]string{}, good...), badIDs...) {
		known[id] = true
	}
	// The bodies without a readable id are rejected under ids of their
	// stream position: exactly one each.
	var others map[string][]status.Event
	waitFor(t, 30*time.Second, func() bool {
		others = map[string][]status.Event{}
		for id, evs := range log.terminal() {
			if !known[id] {
				others[id] = evs
			}
		}
		return len(others) >= badWithoutID
	}, func() string { return fmt.Sprintf("%d of %d id-less bad bodies rejected", len(others), badWithoutID) })
	for id, evs := range others {
		if len(evs) != 1 || evs[0].Status != status.Rejected || evs[0].Reason != status.ReasonInvalid || evs[0].Detail == "" {
			t.Errorf("id-less bad body %s: terminal events %+v, want exactly one rejected, reason invalid, with a detail", id, evs)
		}
	}
	if len(others) != badWithoutID {
		t.Errorf("%d id-less bad bodies rejected, want exactly %d", len(others), badWithoutID)
	}
	if got := sim.Accepted(); got != len(good) {
		t.Errorf("simulator accepted %d submits, want %d (the good ones, once each)", got, len(good))
	}
	// Nothing left in the policy consumer: no message stuck in redelivery.
	cons, err := js.Consumer(ctx, "SMS_OUTBOUND", "policy")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, func() string {
		info, _ := cons.Info(ctx)
		return fmt.Sprintf("policy consumer still holds messages: %+v", info)
	})
	t.Logf("%d good delivered, %d bad with an id and %d without rejected", len(good), len(badIDs), badWithoutID)
	p.stop()
}

// waitFor polls cond every 50 ms, and fails with what() after d.
func waitFor(t *testing.T, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
