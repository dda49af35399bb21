package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
)

func number(i int) string { return fmt.Sprintf("+420%09d", 600000000+i) }

// simDest is how the simulator sees a number: destination_addr has no '+'.
func simDest(i int) string { return number(i)[1:] }

// 1,000 messages, some on NATS, some through the HTTP batch API, some
// invalid, end with exactly one terminal status each; the simulator sees each
// valid one exactly once; the invalid ones are rejected with a reason.
func TestThousandMessagesEndInExactlyOneTerminalStatus(t *testing.T) {
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", ReceiptDelay: 20 * time.Millisecond})
	p := setup(t, t.TempDir(), sim.Addr(), "")
	p.start()
	_, js := p.connect()
	log := watchStatuses(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var valid, invalid []string
	validNum := map[string]int{} // id -> number index
	// 550 valid on NATS, published with Nats-Msg-Id like a producer should.
	for i := range 550 {
		id := fmt.Sprintf("nats-%04d", i)
		body := fmt.Sprintf(`{"id":%q,"to":%q,"text":"Your code is %04d","kind":"transactional","campaign":"e2e","x_extra":{"k":1}}`, id, number(i), i)
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "sms.outbound", Data: []byte(body)}, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		valid = append(valid, id)
		validNum[id] = i
	}
	// 40 invalid with an id: letters in the number, blank text, wrong types.
	bad := []string{
		`{"id":%q,"to":"+420 6OO 000 %03d","text":"x"}`,
		`{"id":%q,"to":"+420600100%03d","text":"   "}`,
		`{"id":%q,"to":420600200%03d,"text":"x"}`,
		`{"id":%q,"to":"+420600300%03d","text":"x","ttl":"soon"}`,
	}
	for i := range 40 {
		id := fmt.Sprintf("bad-%02d", i)
		body := fmt.Sprintf(bad[i%len(bad)], id, i)
		if _, err := js.Publish(ctx, "sms.outbound", []byte(body), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		invalid = append(invalid, id)
	}
	// 10 that are not envelopes at all: no id to report under but a derived one.
	garbage := []string{`not json`, `[1,2,3]`, `{"to":"+4206`, "\xff\xfe", `null`, `{}`, `""`, `{"text":{"a":1}}`, `42`, `{"id":"has.dots","to":"+420600000001","text":"x"}`}
	for _, g := range garbage {
		if _, err := js.Publish(ctx, "sms.outbound", []byte(g)); err != nil {
			t.Fatal(err)
		}
	}
	// 400 valid through the HTTP batch API, two requests of 200.
	for b := range 2 {
		var msgs []map[string]any
		for j := range 200 {
			i := 1000 + b*200 + j
			msgs = append(msgs, map[string]any{"to": number(i), "text": fmt.Sprintf("Batch %d message %d: ceny od 99 €", b, j), "external_id": fmt.Sprintf("order-%d", i), "campaign": "e2e"})
		}
		code, body := p.postJSON("/v1/messages", map[string]any{"messages": msgs})
		if code != http.StatusAccepted {
			t.Fatalf("batch %d: HTTP %d %s", b, code, body)
		}
		var resp struct{ IDs []string }
		if err := json.Unmarshal(body, &resp); err != nil || len(resp.IDs) != 200 {
			t.Fatalf("batch %d: %s (%v)", b, body, err)
		}
		for j, id := range resp.IDs {
			valid = append(valid, id)
			validNum[id] = 1000 + b*200 + j
		}
		if b == 0 {
			// The same request again (a client retry): same ids, nothing doubled.
			code, body2 := p.postJSON("/v1/messages", map[string]any{"messages": msgs})
			if code != http.StatusAccepted || string(body2) != string(body) {
				t.Fatalf("retried batch: HTTP %d %s; want 202 and the same ids", code, body2)
			}
		}
	}
	// An invalid batch is refused whole, with field-level errors.
	code, body := p.postJSON("/v1/messages", map[string]any{"messages": []map[string]any{
		{"to": number(5000), "text": "fine"}, {"to": "12ab", "text": "x"}, {"to": number(5001), "text": ""},
	}})
	var refusal struct {
		Errors []struct {
			Index int
			Field string
		}
	}
	if err := json.Unmarshal(body, &refusal); code != http.StatusBadRequest || err != nil || len(refusal.Errors) != 2 ||
		refusal.Errors[0].Index != 1 || refusal.Errors[0].Field != "to" || refusal.Errors[1].Index != 2 || refusal.Errors[1].Field != "text" {
		t.Fatalf("invalid batch: HTTP %d %s; want 400 naming to of message 1 and text of message 2", code, body)
	}
	// A replay of NATS publishes with the same Nats-Msg-Id is dropped by the stream.
	for i := range 10 {
		id := fmt.Sprintf("nats-%04d", i)
		body := fmt.Sprintf(`{"id":%q,"to":%q,"text":"Your code is %04d"}`, id, number(i), i)
		if _, err := js.Publish(ctx, "sms.outbound", []byte(body), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}

	term := log.waitTerminal(t, 90*time.Second, append(append([]string{}, valid...), invalid...))
	for _, id := range valid {
		evs := term[id]
		if len(evs) != 1 || evs[0].Status != status.Delivered {
			t.Errorf("%s: terminal events %+v, want exactly one delivered", id, evs)
		}
	}
	for _, id := range invalid {
		evs := term[id]
		if len(evs) != 1 || evs[0].Status != status.Rejected || evs[0].Reason != status.ReasonInvalid || evs[0].Detail == "" {
			t.Errorf("%s: terminal events %+v, want exactly one rejected/invalid with a detail", id, evs)
		}
	}
	// The garbage is rejected under derived ids.
	known := map[string]bool{}
	for _, id := range append(append([]string{}, valid...), invalid...) {
		known[id] = true
	}
	natstest.Eventually(t, 30*time.Second, "want the 10 undecodable messages rejected as invalid", func() bool {
		n := 0
		for id, evs := range log.terminal() {
			if !known[id] && len(evs) == 1 && evs[0].Reason == status.ReasonInvalid {
				n++
			}
		}
		return n == len(garbage)
	})
	for id, evs := range log.terminal() {
		if len(evs) != 1 {
			t.Errorf("%s has %d terminal events: %+v", id, len(evs), evs)
		}
	}
	if got := sim.Accepted(); got != len(valid) {
		t.Errorf("simulator accepted %d submits, want %d (one per valid message)", got, len(valid))
	}
	for id, i := range validNum {
		if n := sim.AcceptedTo(simDest(i)); n != 1 {
			t.Errorf("%s: simulator saw %d submits to %s, want 1", id, n, simDest(i))
		}
	}

	// The history is there over HTTP too, in order.
	resp, err := http.Get("http://" + p.httpAddr + "/v1/messages/nats-0007")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var view struct {
		Status  string
		History []status.Event
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, ev := range view.History {
		seq = append(seq, ev.Status)
	}
	if view.Status != status.Delivered || fmt.Sprint(seq) != "[accepted queued submitted delivered]" {
		t.Errorf("GET /v1/messages/nats-0007: status %s, history %v; want delivered after accepted, queued, submitted", view.Status, seq)
	}
	p.stop()
}
