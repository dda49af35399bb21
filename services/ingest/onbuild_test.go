package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/caps"
	"github.com/smsflow/smsflow/pkg/dedup"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

type numberSet map[string]bool

func (s numberSet) Contains(n string) bool { return s[n] }

// withRules gives e's API the policy rules on its own JetStream: a cap of 2
// a day, a blacklisted +420600000666, and +420600000002 opted out.
func withRules(t *testing.T, e env) *rules.Rules {
	t.Helper()
	ctx := context.Background()
	kv := func(b string) jetstream.KeyValue {
		k, err := e.js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	w, _ := caps.NewWindow("UTC")
	store := optout.NewStore(kv(streams.BucketOptOut))
	if err := store.Set(ctx, "+420600000002", optout.Record{OptedOut: true, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	r := &rules.Rules{
		Blacklist: numberSet{"+420600000666": true},
		OptOut:    store,
		Dedup:     dedup.New(kv(streams.BucketDedup), 10*time.Minute),
		Caps:      caps.NewCounter(kv(streams.BucketCaps), w, caps.Limits{Daily: 2, Weekly: 10}),
	}
	e.api.SetRules(r)
	return r
}

type buildAnswer struct {
	IDs     []string      `json:"ids"`
	Queued  int           `json:"queued"`
	DryRun  bool          `json:"dry_run"`
	Results []buildResult `json:"results"`
}

func TestOnBuildChecksEveryMessageBeforeQueueingAny(t *testing.T) {
	e := newEnv(t, Options{Region: "CZ", MaxChars: 1000})
	r := withRules(t, e)
	ctx := context.Background()
	// Already sent today, as the policy stage would have recorded it.
	if v, err := r.Decide(ctx, envelope.Message{ID: "earlier", To: "+420600000001", Text: "hello"}); err != nil || v.Reason != "" {
		t.Fatalf("decide: %+v %v", v, err)
	}
	batch := []map[string]any{
		{"id": "b0", "to": "+420600000001", "text": "new one"},                         // second today: passes
		{"id": "b1", "to": "+420 600 000 001", "text": "hello"},                        // the text "earlier" sent
		{"id": "b2", "to": "+420600000001", "text": "new two"},                         // third today
		{"id": "b3", "to": "+420600000002", "text": "sale"},                            // opted out
		{"id": "b4", "to": "+420600000002", "text": "code 1", "kind": "transactional"}, // opted out, but transactional
		{"id": "b5", "to": "600000666", "text": "sale"},                                // blacklisted, national form
	}
	want := []string{"", status.ReasonDuplicate, status.ReasonDailyCP, status.ReasonOptedOut, "", status.ReasonBlacklist}
	check := func(t *testing.T, res response) buildAnswer {
		t.Helper()
		var a buildAnswer
		if err := json.Unmarshal(res.raw, &a); err != nil {
			t.Fatal(err)
		}
		if len(a.Results) != len(batch) || len(a.IDs) != len(batch) || a.Queued != 2 {
			t.Fatalf("answer %s: want %d results and ids, queued 2", res.raw, len(batch))
		}
		for i, got := range a.Results {
			if got.Index != i || got.ID != batch[i]["id"] || got.Rejected != want[i] || (want[i] != "" && got.Detail == "") {
				t.Errorf("result %d = %+v, want id %s rejected %q with a detail", i, got, batch[i]["id"], want[i])
			}
		}
		return a
	}
	body, _ := json.Marshal(map[string]any{"messages": batch, "policy": "on_build", "dry_run": true})

	t.Run("a dry run answers 200 and queues and records nothing", func(t *testing.T) {
		res := e.post(t, body)
		if res.code != http.StatusOK {
			t.Fatalf("code %d, want 200: %s", res.code, res.raw)
		}
		if a := check(t, res); !a.DryRun {
			t.Error("dry_run = false in the answer")
		}
		if n := e.count(t); n != 0 {
			t.Errorf("%d messages in SMS_OUTBOUND after a dry run, want 0", n)
		}
		if _, err := e.pub.Latest(ctx, "b1"); !errors.Is(err, status.ErrNotFound) {
			t.Errorf("a status for b1 after a dry run: %v", err)
		}
		if got := testutil.ToFloat64(e.api.m.onBuild.WithLabelValues(status.ReasonDuplicate)); got != 0 {
			t.Errorf("onbuild_rejected_total{reason=duplicate} = %v after a dry run, want 0", got)
		}
	})

	t.Run("without dry_run the passing messages are queued and the others rejected", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"messages": batch, "policy": "on_build"})
		res := e.post(t, body)
		if res.code != http.StatusAccepted {
			t.Fatalf("code %d, want 202: %s", res.code, res.raw)
		}
		check(t, res)
		if n := e.count(t); n != 2 {
			t.Fatalf("%d messages in SMS_OUTBOUND, want 2 (b0, b4)", n)
		}
		for i, id := range []string{"b0", "b1", "b2", "b3", "b4", "b5"} {
			ev, err := e.pub.Latest(ctx, id)
			switch {
			case want[i] == "" && !errors.Is(err, status.ErrNotFound):
				t.Errorf("%s: status %+v, %v; want none yet (the policy stage decides)", id, ev, err)
			case want[i] != "" && (err != nil || ev.Status != status.Rejected || ev.Reason != want[i]):
				t.Errorf("%s: status %+v, %v; want rejected/%s", id, ev, err, want[i])
			}
		}
		for reason, n := range map[string]float64{status.ReasonDuplicate: 1, status.ReasonDailyCP: 1, status.ReasonOptedOut: 1, status.ReasonBlacklist: 1} {
			if got := testutil.ToFloat64(e.api.m.onBuild.WithLabelValues(reason)); got != n {
				t.Errorf("onbuild_rejected_total{reason=%s} = %v, want %v", reason, got, n)
			}
		}
		// Nothing was counted: the caps still show only "earlier".
		if u, _, err := r.Caps.Peek(ctx, "+420600000001", "x", time.Now()); err != nil || u.Day != 1 {
			t.Errorf("usage = %+v, %v; want 1 today (on_build counts nothing)", u, err)
		}
	})

	t.Run("a dry run judges invalid messages too; a real run refuses them", func(t *testing.T) {
		mixed := []map[string]any{{"to": "not a number", "text": "x"}, {"to": "+420600000003", "text": "fine"}, {"text": ""}}
		body, _ := json.Marshal(map[string]any{"messages": mixed, "policy": "on_build", "dry_run": true})
		res := e.post(t, body)
		var a buildAnswer
		if err := json.Unmarshal(res.raw, &a); err != nil || res.code != http.StatusOK || len(a.Results) != 3 {
			t.Fatalf("dry run: code %d %s (%v), want 200 with 3 results", res.code, res.raw, err)
		}
		for i, want := range []string{status.ReasonInvalid, "", status.ReasonInvalid} {
			if got := a.Results[i]; got.Index != i || got.Rejected != want || (want != "" && !strings.Contains(got.Detail, "to")) {
				t.Errorf("result %d = %+v, want rejected %q naming the field", i, got, want)
			}
		}
		if a.Queued != 1 {
			t.Errorf("queued = %d in the answer, want 1 (would be)", a.Queued)
		}
		body, _ = json.Marshal(map[string]any{"messages": mixed, "policy": "on_build"})
		if res := e.post(t, body); res.code != http.StatusBadRequest {
			t.Errorf("on_build with invalid messages: code %d (%s), want 400", res.code, res.raw)
		}
	})

	t.Run("the same request again does not reject what the first one queued", func(t *testing.T) {
		// b0 was queued by the run above; now its number is over the cap
		// (b0 and b4 counted nothing, but the earlier one and a new
		// message do), so a fresh verdict would reject it.
		if v, err := r.Decide(ctx, envelope.Message{ID: "later", To: "+420600000001", Text: "other"}); err != nil || v.Reason != "" {
			t.Fatalf("decide: %+v %v", v, err)
		}
		// The policy stage has queued b0 (no policy stage runs here).
		for _, st := range []string{status.Accepted, status.Queued} {
			if err := e.pub.Publish(ctx, status.Event{ID: "b0", Status: st}); err != nil {
				t.Fatal(err)
			}
		}
		body, _ := json.Marshal(map[string]any{"messages": batch[:1], "policy": "on_build"})
		res := e.post(t, body)
		var a buildAnswer
		if err := json.Unmarshal(res.raw, &a); err != nil || res.code != http.StatusAccepted || len(a.Results) != 1 {
			t.Fatalf("code %d %s (%v), want 202 with 1 result", res.code, res.raw, err)
		}
		if got := a.Results[0]; got.Rejected != "" || !strings.Contains(got.Detail, "already known") {
			t.Errorf("result = %+v, want not rejected, already known", got)
		}
		if ev, err := e.pub.Latest(ctx, "b0"); err != nil || ev.Status != status.Queued {
			t.Errorf("b0's latest status = %+v, %v; want still queued", ev, err)
		}
	})

	t.Run("bad options are refused with 400", func(t *testing.T) {
		for _, b := range []string{
			`{"to":"+420600000001","text":"x","policy":"on_build","dry_run":true}`,
			`{"to":"+420600000001","text":"x","dry_run":true}`,
			`{"messages":[{"to":"+420600000001","text":"x"}],"policy":"later"}`,
			`{"messages":[{"to":"+420600000001","text":"x"}],"dry_run":true}`,
			`{"messages":[{"to":"+420600000001","text":"x"}],"policy":"on_build","dry_run":"yes"}`,
		} {
			if res := e.post(t, []byte(b)); res.code != http.StatusBadRequest || res.body.Error == "" {
				t.Errorf("%s: code %d (%s), want 400 with an error", b, res.code, res.raw)
			}
		}
	})
}

func TestOnBuildWithoutRulesIsRefused(t *testing.T) {
	e := newEnv(t, Options{Region: "CZ", MaxChars: 1000})
	res := e.post(t, []byte(`{"messages":[{"to":"+420600000001","text":"x"}],"policy":"on_build"}`))
	if res.code != http.StatusBadRequest {
		t.Fatalf("code %d (%s), want 400", res.code, res.raw)
	}
	if n := e.count(t); n != 0 {
		t.Errorf("%d messages queued, want 0", n)
	}
}
