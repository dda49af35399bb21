package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// env is the API served over HTTP with a real JetStream behind it.
type env struct {
	ns  *server.Server
	js  jetstream.JetStream
	pub *status.Publisher
	api *API
	url string
	cli *http.Client
}

func newEnv(t *testing.T, opts Options) env {
	t.Helper()
	ns := natstest.RunServer(t, t.TempDir())
	_, js := natstest.Connect(t, ns)
	ctx := context.Background()
	if err := streams.Apply(ctx, js, []string{"default", "cz"}); err != nil {
		t.Fatal(err)
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	api := New(js, pub, opts, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// Generous: a 10,000-message batch under -race on a busy 2-core machine
	// has taken over 15 s; the server gives its publishes 30 s.
	return env{ns: ns, js: js, pub: pub, api: api, url: srv.URL, cli: &http.Client{Timeout: time.Minute}}
}

// response is an answer of the API, its JSON body decoded loosely.
type response struct {
	code int
	body struct {
		ID     string   `json:"id"`
		IDs    []string `json:"ids"`
		Error  string   `json:"error"`
		Errors []struct {
			Index int    `json:"index"`
			Field string `json:"field"`
			Error string `json:"error"`
		} `json:"errors"`
		Status  string         `json:"status"`
		Reason  string         `json:"reason"`
		Final   bool           `json:"final"`
		History []status.Event `json:"history"`
	}
	raw []byte
}

func (e env) do(t *testing.T, method, path string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := e.cli.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	var r response
	r.code = res.StatusCode
	if r.raw, err = io.ReadAll(res.Body); err != nil {
		t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(r.raw, &r.body); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v: %.200s", method, path, err, r.raw)
	}
	return r
}

func (e env) post(t *testing.T, body []byte) response {
	t.Helper()
	return e.do(t, http.MethodPost, "/v1/messages", body)
}

// outbound is the SMS_OUTBOUND stream's state.
func (e env) outbound(t *testing.T) (jetstream.Stream, jetstream.StreamState) {
	t.Helper()
	s, err := e.js.Stream(context.Background(), streams.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s, info.State
}

func (e env) count(t *testing.T) uint64 {
	t.Helper()
	_, st := e.outbound(t)
	return st.Msgs
}

// last is the newest message of SMS_OUTBOUND: its Nats-Msg-Id and envelope.
func (e env) last(t *testing.T) (string, envelope.Message) {
	t.Helper()
	return e.at(t, 0)
}

// at is the message of SMS_OUTBOUND back messages before the newest.
func (e env) at(t *testing.T, back uint64) (string, envelope.Message) {
	t.Helper()
	s, st := e.outbound(t)
	raw, err := s.GetMsg(context.Background(), st.LastSeq-back)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Subject != "sms.outbound" {
		t.Errorf("published on %q, want sms.outbound", raw.Subject)
	}
	m, err := envelope.Decode(raw.Data)
	if err != nil {
		t.Fatalf("published envelope does not decode: %v", err)
	}
	return raw.Header.Get(jetstream.MsgIDHeader), m
}

func TestPostingOneEnvelopeQueuesIt(t *testing.T) {
	e := newEnv(t, Options{Region: "CZ"})
	for _, tc := range []struct {
		name      string
		body      string
		wantID    func(string) bool
		wantMsgID func(id string) string
	}{
		{
			name:      "an envelope with an id is queued under it, with Nats-Msg-Id = id",
			body:      `{"id":"order-1","to":"+420600000001","text":"hi"}`,
			wantID:    func(id string) bool { return id == "order-1" },
			wantMsgID: func(id string) string { return id },
		},
		{
			name:      "an envelope without an id gets a new one, with Nats-Msg-Id = that id",
			body:      `{"to":"+420600000001","text":"hi"}`,
			wantID:    envelope.ValidID,
			wantMsgID: func(id string) string { return id },
		},
		{
			name:      "an envelope with external_id is queued with Nats-Msg-Id = external_id",
			body:      `{"external_id":"shop-42-otp","to":"+420600000001","text":"hi"}`,
			wantID:    func(id string) bool { return envelope.ValidID(id) && id != "shop-42-otp" },
			wantMsgID: func(string) string { return "shop-42-otp" },
		},
		{
			name:      "a national number is accepted in the default region",
			body:      `{"id":"national-1","to":"600 000 001","text":"hi"}`,
			wantID:    func(id string) bool { return id == "national-1" },
			wantMsgID: func(id string) string { return id },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.count(t)
			r := e.post(t, []byte(tc.body))
			if r.code != http.StatusAccepted {
				t.Fatalf("status %d (%s), want 202", r.code, r.raw)
			}
			if !tc.wantID(r.body.ID) {
				t.Fatalf("id = %q, not the one expected", r.body.ID)
			}
			if n := e.count(t); n != before+1 {
				t.Fatalf("SMS_OUTBOUND holds %d messages, want %d", n, before+1)
			}
			msgID, m := e.last(t)
			if want := tc.wantMsgID(r.body.ID); msgID != want {
				t.Errorf("Nats-Msg-Id = %q, want %q", msgID, want)
			}
			if m.ID != r.body.ID {
				t.Errorf("published id = %q, want the id answered, %q", m.ID, r.body.ID)
			}
		})
	}
}

func TestARetriedRequestNamesTheSameMessageAndQueuesNothingMore(t *testing.T) {
	e := newEnv(t, Options{})
	for _, tc := range []struct {
		name string
		body string
	}{
		{name: "one envelope with external_id", body: `{"external_id":"order-7-otp","to":"+420600000001","text":"Your code is 4821"}`},
		{name: "one envelope with an id", body: `{"id":"fixed-1","to":"+420600000001","text":"hi"}`},
		{name: "a batch with external_ids", body: `{"messages":[{"external_id":"b-1","to":"+420600000001","text":"a"},{"external_id":"b-2","to":"+420600000002","text":"b"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := e.post(t, []byte(tc.body))
			if first.code != http.StatusAccepted {
				t.Fatalf("first: status %d (%s), want 202", first.code, first.raw)
			}
			count := e.count(t)
			again := e.post(t, []byte(tc.body))
			if again.code != http.StatusAccepted {
				t.Fatalf("retry: status %d (%s), want 202", again.code, again.raw)
			}
			if again.body.ID != first.body.ID || !slices.Equal(again.body.IDs, first.body.IDs) {
				t.Errorf("retry answered %s, first %s: want the same ids", again.raw, first.raw)
			}
			if n := e.count(t); n != count {
				t.Errorf("SMS_OUTBOUND holds %d messages after the retry, want still %d", n, count)
			}
		})
	}
	if n := testutil.ToFloat64(e.api.m.requests.WithLabelValues("accepted")); n != 6 {
		t.Errorf("requests_total{result=accepted} = %v, want 6", n)
	}
}

func TestPostingABatch(t *testing.T) {
	const maxBody = 2 << 20
	e := newEnv(t, Options{MaxBodyBytes: maxBody})
	batch := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"messages":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"id":"batch-%05d","to":"+4206%08d","text":"message %d"}`, i, i, i)
		}
		b.WriteString(`]}`)
		return []byte(b.String())
	}

	t.Run("a batch of 10,000 is accepted with its ids in order", func(t *testing.T) {
		before := e.count(t)
		r := e.post(t, batch(10000))
		if r.code != http.StatusAccepted {
			t.Fatalf("status %d (%.300s), want 202", r.code, r.raw)
		}
		if len(r.body.IDs) != 10000 {
			t.Fatalf("%d ids, want 10000", len(r.body.IDs))
		}
		for i, id := range r.body.IDs {
			if want := fmt.Sprintf("batch-%05d", i); id != want {
				t.Fatalf("ids[%d] = %q, want %q", i, id, want)
			}
		}
		if n := e.count(t); n != before+10000 {
			t.Fatalf("SMS_OUTBOUND holds %d messages, want %d", n, before+10000)
		}
		if msgID, _ := e.last(t); msgID != "batch-09999" {
			t.Errorf("last Nats-Msg-Id = %q, want batch-09999", msgID)
		}
		if msgID, _ := e.at(t, 9999); msgID != "batch-00000" {
			t.Errorf("first Nats-Msg-Id = %q, want batch-00000", msgID)
		}
		if n := testutil.ToFloat64(e.api.m.messages); n != 10000 {
			t.Errorf("messages_total = %v, want 10000", n)
		}
	})

	escapes := strings.Repeat("<", 200_000) // JSON-encodes to 1.2 MB
	for _, tc := range []struct {
		name      string
		body      []byte
		wantCode  int
		wantError string
		wantItems [][2]any // index, field
	}{
		{name: "a batch of 10,001 is refused as too large", body: batch(10001), wantCode: http.StatusRequestEntityTooLarge, wantError: "at most 10000"},
		{name: "a body over max_body_bytes is refused as too large", body: append(append([]byte(`{"to":"+420600000001","text":"`), bytes.Repeat([]byte("a"), maxBody)...), `"}`...), wantCode: http.StatusRequestEntityTooLarge, wantError: "larger than"},
		{
			name: "a batch with invalid messages lists each problem by index and field",
			body: []byte(`{"messages":[
				{"id":"fine-1","to":"+420600000001","text":"ok"},
				{"to":"","text":""},
				{"id":"a.b","to":"+420600000001","text":"   "},
				42,
				{"to":"+420 600 ABC 001","text":"hi"},
				{"to":"+420600000001","text":"hi","ttl":"soon"},
				{"id":"fine-2","to":"+420600000002","text":"ok"}]}`),
			wantCode:  http.StatusBadRequest,
			wantError: "nothing was queued",
			wantItems: [][2]any{{1, "to"}, {1, "text"}, {2, "id"}, {2, "text"}, {3, ""}, {4, "to"}, {5, "ttl"}},
		},
		{name: "a message too big once encoded is refused, not retried forever", body: []byte(`{"to":"+420600000001","text":"hi","blob":"` + escapes + `"}`), wantCode: http.StatusBadRequest, wantItems: [][2]any{{0, ""}}},
		{name: "a body that is not JSON is refused", body: []byte(`to=+420600000001&text=hi`), wantCode: http.StatusBadRequest, wantError: "not a JSON object"},
		{name: "an empty body is refused", body: nil, wantCode: http.StatusBadRequest, wantError: "not a JSON object"},
		{name: "a JSON array instead of an object is refused", body: []byte(`[{"to":"+420600000001","text":"hi"}]`), wantCode: http.StatusBadRequest, wantError: "not a JSON object"},
		{name: "an empty messages array is refused", body: []byte(`{"messages":[]}`), wantCode: http.StatusBadRequest, wantError: "no messages"},
		{name: "messages that is not an array is refused", body: []byte(`{"messages":{"to":"+420600000001"}}`), wantCode: http.StatusBadRequest, wantError: "must be an array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.count(t)
			r := e.post(t, tc.body)
			if r.code != tc.wantCode {
				t.Fatalf("status %d (%.300s), want %d", r.code, r.raw, tc.wantCode)
			}
			if r.body.Error == "" || !strings.Contains(r.body.Error, tc.wantError) {
				t.Errorf("error = %q, want it to say %q", r.body.Error, tc.wantError)
			}
			var items [][2]any
			for _, it := range r.body.Errors {
				items = append(items, [2]any{it.Index, it.Field})
				if it.Error == "" {
					t.Errorf("item %d field %q has no error text", it.Index, it.Field)
				}
			}
			if !slices.Equal(items, tc.wantItems) {
				t.Errorf("errors at (index, field) = %v, want %v", items, tc.wantItems)
			}
			if n := e.count(t); n != before {
				t.Errorf("SMS_OUTBOUND holds %d messages, want still %d: nothing may be queued", n, before)
			}
		})
	}
	if n := testutil.ToFloat64(e.api.m.requests.WithLabelValues("invalid")); n != 2 {
		t.Errorf("requests_total{result=invalid} = %v, want 2", n)
	}
}

func TestGettingAMessageStatus(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	events := func(id string, evs ...status.Event) {
		t.Helper()
		for _, ev := range evs {
			ev.ID = id
			if err := e.pub.Publish(ctx, ev); err != nil {
				t.Fatalf("publish %s %s: %v", id, ev.Status, err)
			}
		}
	}
	accepted, queued := status.Event{Status: status.Accepted}, status.Event{Status: status.Queued, Pool: "cz"}
	submitted := status.Event{Status: status.Submitted, Link: "cz1", SMSCID: "abc"}
	events("in-flight", accepted, queued, submitted)
	events("delivered", accepted, queued, submitted, status.Event{Status: status.Delivered})
	events("rejected", accepted, status.Event{Status: status.Rejected, Reason: status.ReasonNoRoute, Detail: "no pool serves +1"})
	events("late-event", accepted, queued, submitted, status.Event{Status: status.Failed, Reason: status.ReasonPermanent},
		status.Event{Status: status.SubmitUnknown, Attempt: 2})

	for _, tc := range []struct {
		name        string
		id          string
		wantCode    int
		wantStatus  string
		wantReason  string
		wantFinal   bool
		wantHistory []string
	}{
		{name: "an unknown id is not found", id: "no-such-message", wantCode: http.StatusNotFound},
		{name: "an id with dots is a bad request", id: "a.b", wantCode: http.StatusBadRequest},
		{name: "an id longer than 64 characters is a bad request", id: strings.Repeat("x", 65), wantCode: http.StatusBadRequest},
		{name: "a message in flight shows its latest status and is not final", id: "in-flight", wantCode: http.StatusOK,
			wantStatus: status.Submitted, wantHistory: []string{status.Accepted, status.Queued, status.Submitted}},
		{name: "a delivered message is final", id: "delivered", wantCode: http.StatusOK, wantStatus: status.Delivered, wantFinal: true,
			wantHistory: []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}},
		{name: "a rejected message shows its reason", id: "rejected", wantCode: http.StatusOK, wantStatus: status.Rejected,
			wantReason: status.ReasonNoRoute, wantFinal: true, wantHistory: []string{status.Accepted, status.Rejected}},
		{name: "an event after the terminal status is not recorded", id: "late-event", wantCode: http.StatusOK, wantStatus: status.Failed,
			wantReason: status.ReasonPermanent, wantFinal: true,
			wantHistory: []string{status.Accepted, status.Queued, status.Submitted, status.Failed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, http.MethodGet, "/v1/messages/"+tc.id, nil)
			if r.code != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", r.code, r.raw, tc.wantCode)
			}
			if tc.wantCode != http.StatusOK {
				if r.body.Error == "" {
					t.Errorf("answer %s has no error", r.raw)
				}
				return
			}
			if r.body.ID != tc.id || r.body.Status != tc.wantStatus || r.body.Reason != tc.wantReason || r.body.Final != tc.wantFinal {
				t.Errorf("answer = %s, want id %s status %s reason %q final %v", r.raw, tc.id, tc.wantStatus, tc.wantReason, tc.wantFinal)
			}
			var got []string
			for _, ev := range r.body.History {
				got = append(got, ev.Status)
				if ev.ID != tc.id || ev.At.IsZero() {
					t.Errorf("history event %+v: want id %s and a time", ev, tc.id)
				}
			}
			if !slices.Equal(got, tc.wantHistory) {
				t.Errorf("history = %v, want %v", got, tc.wantHistory)
			}
		})
	}
}

func TestWhenNATSIsDownTheAPIAnswers503(t *testing.T) {
	e := newEnv(t, Options{})
	if r := e.post(t, []byte(`{"id":"before","to":"+420600000001","text":"hi"}`)); r.code != http.StatusAccepted {
		t.Fatalf("with NATS up: status %d (%s), want 202", r.code, r.raw)
	}
	e.ns.Shutdown()
	e.ns.WaitForShutdown()

	for _, tc := range []struct {
		name, method, path, body string
		wantError                string
	}{
		{name: "posting one envelope says the messages could not be queued", method: http.MethodPost, path: "/v1/messages",
			body: `{"id":"during","to":"+420600000001","text":"hi"}`, wantError: "could not queue"},
		{name: "posting a batch says the messages could not be queued", method: http.MethodPost, path: "/v1/messages",
			body: `{"messages":[{"to":"+420600000001","text":"a"},{"to":"+420600000002","text":"b"}]}`, wantError: "could not queue"},
		{name: "reading a status says the store is unavailable", method: http.MethodGet, path: "/v1/messages/before", wantError: "unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := e.do(t, tc.method, tc.path, []byte(tc.body))
			if r.code != http.StatusServiceUnavailable {
				t.Fatalf("status %d (%s), want 503", r.code, r.raw)
			}
			if !strings.Contains(r.body.Error, tc.wantError) {
				t.Errorf("error = %q, want it to say %q", r.body.Error, tc.wantError)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("answered after %v; a client should not hang while NATS is down", d)
			}
		})
	}
	if n := testutil.ToFloat64(e.api.m.requests.WithLabelValues("error")); n != 2 {
		t.Errorf("requests_total{result=error} = %v, want 2", n)
	}
}
