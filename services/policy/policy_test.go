package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// czRoutes sends Czech numbers to pool cz and everything else to default.
func czRoutes() *Routes {
	return NewRoutes(map[string][]string{"cz": {"+420"}, "default": nil}, "default")
}

func TestAValidMessageIsForwardedToItsPoolAndQueued(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(czRoutes()), testOptions())
	run(t, s)

	for _, tc := range []struct {
		name     string
		body     map[string]any
		wantTo   string
		wantPool string
		wantTTL  time.Duration
		wantKept map[string]string // unknown field ► its JSON
	}{
		{
			name:     "an international number is forwarded in E.164 to the pool of its prefix",
			body:     map[string]any{"id": "intl-1", "to": "+420 600 000 001", "text": "Your code is 4821"},
			wantTo:   "+420600000001",
			wantPool: "cz",
		},
		{
			name:     "a national number is read in the default region",
			body:     map[string]any{"id": "national-1", "to": "600-000-002", "text": "hi"},
			wantTo:   "+420600000002",
			wantPool: "cz",
		},
		{
			name:     "a ttl sets accepted_at to the stream time and expires_at ttl after it",
			body:     map[string]any{"id": "ttl-1", "to": "+420600000003", "text": "hi", "ttl": "5m"},
			wantTo:   "+420600000003",
			wantPool: "cz",
			wantTTL:  5 * time.Minute,
		},
		{
			name:     "a ttl in seconds works the same",
			body:     map[string]any{"id": "ttl-2", "to": "+420600000004", "text": "hi", "ttl": 90},
			wantTo:   "+420600000004",
			wantPool: "cz",
			wantTTL:  90 * time.Second,
		},
		{
			name:     "an envelope of nearly 1 MiB that still fits SMS_EGRESS is forwarded whole",
			body:     map[string]any{"id": "big-1", "to": "+420600000005", "text": "hi", "blob": strings.Repeat("a", (1<<20)-4096)},
			wantTo:   "+420600000005",
			wantPool: "cz",
			wantKept: map[string]string{"blob": `"` + strings.Repeat("a", (1<<20)-4096) + `"`},
		},
		{
			name:     "unknown fields are kept as they were",
			body:     map[string]any{"id": "extra-1", "to": "+441632960961", "text": "hi", "x_customer": map[string]any{"tier": 3}, "note": "keep me"},
			wantTo:   "+441632960961",
			wantPool: "default",
			wantKept: map[string]string{"x_customer": `{"tier":3}`, "note": `"keep me"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.body["id"].(string)
			seq := publishJSON(t, e, tc.body)
			h := waitSettled(t, e, id)
			if got := statuses(h); !slices.Equal(got, []string{status.Accepted, status.Queued}) {
				t.Fatalf("statuses on %s = %v, want [accepted queued]", status.Subject(id), got)
			}
			if h[1].Pool != tc.wantPool {
				t.Errorf("queued event pool = %q, want %q", h[1].Pool, tc.wantPool)
			}
			out := egressOf(t, e, id)
			if len(out) != 1 {
				t.Fatalf("%d messages with id %s in SMS_EGRESS, want 1", len(out), id)
			}
			got := out[0]
			if got.subject != streams.EgressSubject(tc.wantPool) {
				t.Errorf("subject = %q, want %q", got.subject, streams.EgressSubject(tc.wantPool))
			}
			if got.msgID != id {
				t.Errorf("Nats-Msg-Id = %q, want the message id %q", got.msgID, id)
			}
			if got.m.To != tc.wantTo {
				t.Errorf("to = %q, want %q", got.m.To, tc.wantTo)
			}
			if got.m.Pool != tc.wantPool {
				t.Errorf("pool field = %q, want %q", got.m.Pool, tc.wantPool)
			}
			outbound, err := e.js.Stream(context.Background(), streams.Outbound)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := outbound.GetMsg(context.Background(), seq)
			if err != nil {
				t.Fatal(err)
			}
			if !got.m.AcceptedAt.Equal(raw.Time) {
				t.Errorf("accepted_at = %v, want the time it entered SMS_OUTBOUND, %v", got.m.AcceptedAt, raw.Time)
			}
			if tc.wantTTL == 0 && !got.m.ExpiresAt.IsZero() {
				t.Errorf("expires_at = %v, want none without a ttl", got.m.ExpiresAt)
			}
			if tc.wantTTL != 0 && !got.m.ExpiresAt.Equal(got.m.AcceptedAt.Add(tc.wantTTL)) {
				t.Errorf("expires_at = %v, want accepted_at + %v = %v", got.m.ExpiresAt, tc.wantTTL, got.m.AcceptedAt.Add(tc.wantTTL))
			}
			for k, want := range tc.wantKept {
				var buf bytes.Buffer
				if err := json.Compact(&buf, got.raw[k]); err != nil || buf.String() != want {
					t.Errorf("unknown field %q = %.100s, want %.100s kept", k, got.raw[k], want)
				}
			}
		})
	}
}

func TestRoutingPicksOnePoolOrRejectsWithNoRoute(t *testing.T) {
	prefixes := map[string][]string{"cz": {"+420"}, "czmobile": {"+4206", "+4207"}, "default": nil}
	for _, tc := range []struct {
		name       string
		def        string
		to, route  string
		wantPool   string
		wantReject string
	}{
		{name: "a route field naming a pool wins over the prefixes", def: "default", to: "+420600000001", route: "default", wantPool: "default"},
		{name: "the longest matching prefix wins (+4206 over +420)", def: "default", to: "+420600000001", wantPool: "czmobile"},
		{name: "a shorter prefix serves what the longer ones do not", def: "default", to: "+420212345678", wantPool: "cz"},
		{name: "a number no prefix serves goes to the default pool", def: "default", to: "+441632960961", wantPool: "default"},
		{name: "without a default pool a number no prefix serves is rejected with no_route", to: "+441632960961", wantReject: status.ReasonNoRoute},
		{name: "a route naming an unknown pool is rejected with no_route", def: "default", to: "+420600000001", route: "nowhere", wantReject: status.ReasonNoRoute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := newStage(t, e, Chain(NewRoutes(prefixes, tc.def)), testOptions())
			run(t, s)
			body := map[string]any{"id": "route-1", "to": tc.to, "text": "hi"}
			if tc.route != "" {
				body["route"] = tc.route
			}
			publishJSON(t, e, body)
			h := waitSettled(t, e, "route-1")
			last := h[len(h)-1]
			if tc.wantReject != "" {
				if last.Status != status.Rejected || last.Reason != tc.wantReject || last.Detail == "" {
					t.Fatalf("last status = %+v, want rejected/%s with a detail", last, tc.wantReject)
				}
				if n := len(egress(t, e)); n != 0 {
					t.Fatalf("%d messages in SMS_EGRESS, want none", n)
				}
				if n := testutil.ToFloat64(s.m.rejected.WithLabelValues(tc.wantReject)); n != 1 {
					t.Errorf("rejected_total{reason=%s} = %v, want 1", tc.wantReject, n)
				}
				return
			}
			if last.Status != status.Queued || last.Pool != tc.wantPool {
				t.Fatalf("last status = %+v, want queued in pool %s", last, tc.wantPool)
			}
			out := egressOf(t, e, "route-1")
			if len(out) != 1 || out[0].subject != streams.EgressSubject(tc.wantPool) {
				t.Fatalf("egress = %+v, want one message on %s", out, streams.EgressSubject(tc.wantPool))
			}
		})
	}
}

func TestInvalidInputNeverBlocksTheConsumer(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(czRoutes()), testOptions())
	run(t, s)

	// nearMiB pads a JSON object to just under SMS_OUTBOUND's max_msg_size (1 MiB).
	nearMiB := func(prefix, field, suffix string) []byte {
		pad := (1 << 20) - 64 - len(prefix) - len(suffix) - len(field) - 6
		return []byte(prefix + `"` + field + `":"` + strings.Repeat("a", pad) + `"` + suffix)
	}
	// escapes is a string that JSON-encodes to six times its size ('<' becomes
	// \u003c): small on the way in, too big for NATS once put in an event.
	escapes := strings.Repeat("<", 200_000)

	for _, tc := range []struct {
		name       string
		body       []byte
		id         string // "" when the stage must derive one from the stream position
		wantDetail string
	}{
		{name: "garbage that is not JSON is rejected under a derived id", body: []byte("this is not json {"), wantDetail: "not a JSON object"},
		{name: "a JSON array is rejected under a derived id", body: []byte(`[1,2,3]`), wantDetail: "not a JSON object"},
		{name: "JSON null is rejected under a derived id", body: []byte(`null`), wantDetail: "not a JSON object"},
		{name: "a wrong type is rejected under the id the sender chose", body: []byte(`{"id":"wrong-type","to":420600000001,"text":"hi"}`), id: "wrong-type", wantDetail: "to: must be a string"},
		{name: "a bad ttl is rejected under the id the sender chose", body: []byte(`{"id":"bad-ttl","to":"+420600000001","text":"hi","ttl":"soon"}`), id: "bad-ttl", wantDetail: "ttl"},
		{name: "a blank text is rejected naming text", body: []byte(`{"id":"blank-text","to":"+420600000001","text":"   "}`), id: "blank-text", wantDetail: "text: required"},
		{name: "letters in the number are rejected naming to", body: []byte(`{"id":"letters","to":"+420 600 ABC 001","text":"hi"}`), id: "letters", wantDetail: "to:"},
		{name: "an id with dots is rejected under a derived id", body: []byte(`{"id":"a.b.c","to":"+420600000001","text":"hi"}`), wantDetail: "id:"},
		{name: "invalid UTF-8 is rejected under the id it names", body: []byte("{\"id\":\"bad-utf8\",\"to\":\"+420600000001\",\"text\":\"\xff\xfe\"}"), id: "bad-utf8", wantDetail: "UTF-8"},
		{name: "a body just under 1 MiB of text is rejected for its length", body: nearMiB(`{"id":"huge-text","to":"+420600000001",`, "text", `}`), id: "huge-text", wantDetail: "text:"},
		{name: "a body just under 1 MiB of unknown field, too big to forward, is rejected", body: nearMiB(`{"id":"huge-extra","to":"+420600000001","text":"hi",`, "blob", `}`), id: "huge-extra", wantDetail: "bytes"},
		{name: "an unknown field that grows past the size limit when encoded is rejected", body: []byte(`{"id":"escaped-extra","to":"+420600000001","text":"hi","blob":"` + escapes + `"}`), id: "escaped-extra", wantDetail: "bytes"},
		{name: "a campaign too long for an event is rejected naming campaign", body: []byte(`{"id":"huge-campaign","to":"+420600000001","text":"hi","campaign":"` + escapes + `"}`), id: "huge-campaign", wantDetail: "campaign"},
		{name: "a kind whose error would not fit an event is rejected naming kind", body: []byte(`{"id":"huge-kind","to":"+420600000001","text":"hi","kind":"` + escapes + `"}`), id: "huge-kind", wantDetail: "kind"},
		{name: "a send_at whose error would not fit an event is rejected naming send_at", body: []byte(`{"id":"huge-send-at","to":"+420600000001","text":"hi","send_at":"` + escapes + `"}`), id: "huge-send-at", wantDetail: "send_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq := publish(t, e, tc.body)
			id := tc.id
			if id == "" {
				id = derivedID(t, e, seq)
			}
			h := waitSettled(t, e, id)
			last := h[len(h)-1]
			if last.Status != status.Rejected || last.Reason != status.ReasonInvalid {
				t.Fatalf("statuses of %s = %+v, want it to end rejected/invalid", id, h)
			}
			if !strings.Contains(last.Detail, tc.wantDetail) {
				t.Errorf("detail = %.200q, want it to mention %q", last.Detail, tc.wantDetail)
			}
			if len(last.Detail) > 2048 {
				t.Errorf("detail is %d bytes, want it bounded", len(last.Detail))
			}
			if n := len(egressOf(t, e, id)); n != 0 {
				t.Errorf("%d messages with id %s in SMS_EGRESS, want none", n, id)
			}
		})
	}
	bad := int(testutil.ToFloat64(s.m.out.WithLabelValues("rejected")))

	for i := range 3 {
		publishJSON(t, e, map[string]any{"id": fmt.Sprintf("good-%d", i), "to": "+420600000001", "text": "hi"})
	}
	for i := range 3 {
		if h := waitSettled(t, e, fmt.Sprintf("good-%d", i)); h[len(h)-1].Status != status.Queued {
			t.Errorf("good-%d: statuses %v, want it queued after the invalid ones", i, statuses(h))
		}
	}
	drained(t, e)
	if n := testutil.ToFloat64(s.m.rejected.WithLabelValues(status.ReasonInvalid)); int(n) != bad {
		t.Errorf("rejected_total{reason=invalid} = %v, want %d", n, bad)
	}
	if n := testutil.ToFloat64(s.m.out.WithLabelValues("queued")); n != 3 {
		t.Errorf("messages_total{result=queued} = %v, want 3", n)
	}
	checkMetricsAddUp(t, s.m, bad+3)
}

func TestAMessageWithoutAnIDIsQueuedOnceUnderADerivedID(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(czRoutes()), testOptions())
	run(t, s)

	for _, tc := range []struct {
		name       string
		body       string
		wantStatus []string
	}{
		{name: "a valid message without an id is accepted then queued", body: `{"to":"+420600000001","text":"hi"}`, wantStatus: []string{status.Accepted, status.Queued}},
		{name: "an invalid message without an id is accepted then rejected", body: `{"to":"+420600000001","text":""}`, wantStatus: []string{status.Accepted, status.Rejected}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq := publish(t, e, []byte(tc.body))
			id := derivedID(t, e, seq)
			if !envelope.ValidID(id) {
				t.Fatalf("derived id %q is not a valid id", id)
			}
			h := waitSettled(t, e, id)
			if got := statuses(h); !slices.Equal(got, tc.wantStatus) {
				t.Fatalf("statuses of %s = %v, want %v", id, got, tc.wantStatus)
			}
			wantEgress := 0
			if tc.wantStatus[len(tc.wantStatus)-1] == status.Queued {
				wantEgress = 1
			}
			out := egressOf(t, e, id)
			if len(out) != wantEgress {
				t.Fatalf("%d messages with id %s in SMS_EGRESS, want %d", len(out), id, wantEgress)
			}
			if wantEgress == 1 && out[0].msgID != id {
				t.Errorf("Nats-Msg-Id = %q, want the derived id %q", out[0].msgID, id)
			}
		})
	}
	drained(t, e)
	checkMetricsAddUp(t, s.m, 2)
}

// TestAReplayAfterACrashDoesNotDoubleTheMessage handles a message, drops the
// outcome as a crash before the ack would, lets the broker redeliver it, and
// handles it again.
func TestAReplayAfterACrashDoesNotDoubleTheMessage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   string
		id     string // "" for a derived id
		status string
	}{
		{name: "a message with an id is forwarded once and queued once", body: `{"id":"crash-1","to":"+420600000001","text":"hi"}`, id: "crash-1", status: status.Queued},
		{name: "a message without an id is forwarded once under the same derived id", body: `{"to":"+420600000001","text":"hi"}`, status: status.Queued},
		{name: "an invalid message without an id is rejected once under the same derived id", body: `{"to":"+420600000001"}`, status: status.Rejected},
		{name: "garbage is rejected once under the same derived id", body: `not json`, status: status.Rejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := newStage(t, e, Chain(czRoutes()), testOptions())
			seq := publish(t, e, []byte(tc.body))
			id := tc.id
			if id == "" {
				id = derivedID(t, e, seq)
			}
			ctx := context.Background()
			cons, err := e.js.Consumer(ctx, streams.Outbound, streams.ConsumerPolicy)
			if err != nil {
				t.Fatal(err)
			}
			fetch := func() jetstream.Msg {
				t.Helper()
				b, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
				if err != nil {
					t.Fatal(err)
				}
				for m := range b.Messages() {
					return m
				}
				t.Fatalf("no message redelivered within %v: %v", wait, b.Error())
				return nil
			}

			first := fetch()
			s.handle(ctx, first) // crash: the outcome is never carried out
			if err := first.Nak(); err != nil {
				t.Fatal(err)
			}
			again := fetch()
			if md, _ := again.Metadata(); md.NumDelivered != 2 || md.Sequence.Stream != seq {
				t.Fatalf("redelivery metadata %+v, want stream seq %d delivered twice", md, seq)
			}
			o := s.handle(ctx, again)
			if o.String() != "ack" {
				t.Fatalf("outcome of the replay = %s, want ack", o)
			}
			if err := consume.Settle(again, o); err != nil {
				t.Fatal(err)
			}

			h := history(t, e, id)
			if n := countStatus(h, tc.status); n != 1 {
				t.Errorf("%d %s events for %s (history %v), want exactly 1", n, tc.status, id, statuses(h))
			}
			wantEgress := 0
			if tc.status == status.Queued {
				wantEgress = 1
			}
			if n := len(egressOf(t, e, id)); n != wantEgress {
				t.Errorf("%d messages with id %s in SMS_EGRESS, want %d", n, id, wantEgress)
			}
			drained(t, e)
		})
	}
}

func countStatus(h []status.Event, s string) int {
	n := 0
	for _, ev := range h {
		if ev.Status == s {
			n++
		}
	}
	return n
}

func TestTheSameEnvelopePublishedTwiceIsForwardedOnce(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(czRoutes()), testOptions())
	run(t, s)

	body := []byte(`{"id":"twice-1","to":"+420600000001","text":"hi"}`)
	first, second := publish(t, e, body), publish(t, e, body)
	if first == second {
		t.Fatalf("both publishes landed at seq %d; the test needs two stream messages", first)
	}
	waitSettled(t, e, "twice-1")
	drained(t, e)
	if n := len(egressOf(t, e, "twice-1")); n != 1 {
		t.Errorf("%d messages with id twice-1 in SMS_EGRESS, want 1 (Nats-Msg-Id dedup)", n)
	}
	if got := statuses(history(t, e, "twice-1")); !slices.Equal(got, []string{status.Accepted, status.Queued}) {
		t.Errorf("statuses = %v, want one accepted and one queued", got)
	}
}

func TestACheckThatCannotDecideIsRetriedNotRejected(t *testing.T) {
	e := newEnv(t)
	var failing atomic.Bool
	failing.Store(true)
	var calls atomic.Int64
	check := CheckFunc(func(ctx context.Context, m envelope.Message) (Decision, error) {
		calls.Add(1)
		if failing.Load() {
			return Decision{}, errors.New("kv unavailable")
		}
		return Decision{Pool: "cz"}, nil
	})
	s := newStage(t, e, check, testOptions())
	run(t, s)

	publishJSON(t, e, map[string]any{"id": "undecided-1", "to": "+420600000001", "text": "hi"})
	natstest.Eventually(t, wait, "the failing check is retried at least 3 times", func() bool {
		return testutil.ToFloat64(s.m.retries) >= 3 && calls.Load() >= 3
	})
	if got := statuses(history(t, e, "undecided-1")); !slices.Equal(got, []string{status.Accepted}) {
		t.Fatalf("statuses while the check fails = %v, want only accepted (nothing terminal)", got)
	}
	if n := sum(s.m.out, results...); n != 0 {
		t.Fatalf("messages_total = %v while the check fails, want 0", n)
	}

	failing.Store(false)
	h := waitSettled(t, e, "undecided-1")
	if got := statuses(h); !slices.Equal(got, []string{status.Accepted, status.Queued}) {
		t.Fatalf("statuses once the check decides = %v, want [accepted queued]", got)
	}
	if n := len(egressOf(t, e, "undecided-1")); n != 1 {
		t.Errorf("%d messages in SMS_EGRESS, want 1", n)
	}
	drained(t, e)
	if n := sum(s.m.rejected, reasons...); n != 0 {
		t.Errorf("rejected_total = %v, want 0: an error is not a rejection", n)
	}
	checkMetricsAddUp(t, s.m, 1)
}

func TestAMessageWhoseTTLPassedBeforePolicyExpires(t *testing.T) {
	e := newEnv(t)
	s := newStage(t, e, Chain(czRoutes()), testOptions())
	s.now = func() time.Time { return time.Now().Add(time.Hour) }
	run(t, s)

	publishJSON(t, e, map[string]any{"id": "late-1", "to": "+420600000001", "text": "hi", "ttl": "5m"})
	h := waitSettled(t, e, "late-1")
	if got := statuses(h); !slices.Equal(got, []string{status.Accepted, status.Expired}) {
		t.Fatalf("statuses = %v, want [accepted expired]", got)
	}
	if n := len(egress(t, e)); n != 0 {
		t.Errorf("%d messages in SMS_EGRESS, want none", n)
	}
	if n := testutil.ToFloat64(s.m.out.WithLabelValues("expired")); n != 1 {
		t.Errorf("messages_total{result=expired} = %v, want 1", n)
	}
	checkMetricsAddUp(t, s.m, 1)
}

func TestMetricsAddUpToTheMessagesSent(t *testing.T) {
	e := newEnv(t)
	routes := NewRoutes(map[string][]string{"cz": {"+420"}}, "")
	blacklist := CheckFunc(func(_ context.Context, m envelope.Message) (Decision, error) {
		if m.To == "+420600000666" {
			return Decision{Reject: status.ReasonBlacklist, Detail: "number is blacklisted"}, nil
		}
		return Decision{}, nil
	})
	s := newStage(t, e, Chain(blacklist, routes), testOptions())
	run(t, s)

	sent := []struct{ id, body, want string }{
		{"m-ok-1", `{"id":"m-ok-1","to":"+420600000001","text":"hi"}`, "queued"},
		{"m-ok-2", `{"id":"m-ok-2","to":"+420600000002","text":"hi"}`, "queued"},
		{"m-ok-3", `{"id":"m-ok-3","to":"+420600000003","text":"hi"}`, "queued"},
		{"m-bad-1", `{"id":"m-bad-1","to":"+420600000001","text":""}`, status.ReasonInvalid},
		{"m-bad-2", `{"id":"m-bad-2","to":42,"text":"hi"}`, status.ReasonInvalid},
		{"m-black", `{"id":"m-black","to":"+420600000666","text":"hi"}`, status.ReasonBlacklist},
		{"m-nowhere", `{"id":"m-nowhere","to":"+441632960961","text":"hi"}`, status.ReasonNoRoute},
	}
	for _, m := range sent {
		publish(t, e, []byte(m.body))
	}
	want := map[string]float64{}
	for _, m := range sent {
		h := waitSettled(t, e, m.id)
		last := h[len(h)-1]
		got := last.Reason
		if last.Status == status.Queued {
			got = "queued"
		}
		if got != m.want {
			t.Errorf("%s ended %s/%s, want %s", m.id, last.Status, last.Reason, m.want)
		}
		want[m.want]++
	}
	drained(t, e)
	checkMetricsAddUp(t, s.m, len(sent))
	if n := testutil.ToFloat64(s.m.out.WithLabelValues("queued")); n != want["queued"] {
		t.Errorf("messages_total{result=queued} = %v, want %v", n, want["queued"])
	}
	for _, r := range reasons {
		if n := testutil.ToFloat64(s.m.rejected.WithLabelValues(r)); n != want[r] {
			t.Errorf("rejected_total{reason=%s} = %v, want %v", r, n, want[r])
		}
	}
	if n := testutil.ToFloat64(s.m.poison); n != 1 {
		t.Errorf("invalid_envelopes_total = %v, want 1 (the one that does not decode)", n)
	}
}
