package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// TestEndpointsAnswerTheDocumentedShapes feeds the observer directly and
// reads both endpoints as JSON, as the page does.
func TestEndpointsAnswerTheDocumentedShapes(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatal(err)
	}
	d := New(js, Options{
		Links:   []Link{{Name: "sim1", Pool: "default", Rate: 200, Burst: 200, Price: 0.1}, {Name: "sim2", Pool: "default", Rate: 50, Burst: 50}},
		Streams: []string{streams.Outbound, streams.Egress},
	}, discard(), prometheus.NewRegistry())
	clk := &fakeClock{t: t0}
	d.obs.now, d.now = clk.now, clk.now
	for i, id := range []string{"a", "b", "c"} {
		life(d.obs, id, "sim1", i+1, time.Second, 2*time.Second) // 1+2+3 parts
	}
	d.obs.observe(status.Event{ID: "r", Status: status.Accepted, At: t0})
	d.obs.observe(status.Event{ID: "r", Status: status.Rejected, Reason: status.ReasonBlacklist, At: t0})
	clk.t = t0.Add(time.Second) // the events are in the last whole second

	mux := http.NewServeMux()
	d.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	getJSON := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}

	var s Stats
	getJSON("/api/v1/dashboard/stats", &s)
	if s.Counts[status.Delivered] != 3 || s.Counts[status.Rejected] != 1 || s.Finished != 4 {
		t.Errorf("counts %v finished %d, want 3 delivered, 1 rejected, 4 finished", s.Counts, s.Finished)
	}
	if s.SuccessRate != 0.75 || s.FailureRate != 0.25 {
		t.Errorf("success %v failure %v, want 0.75 and 0.25", s.SuccessRate, s.FailureRate)
	}
	// 4 accepted in one second, over a 5 s window.
	if s.WindowSeconds != 5 || s.InPerSecond != 0.8 || s.OutPerSecond != 0.6 || s.DeliveredPS != 0.6 || s.FailedPS != 0.2 {
		t.Errorf("rates = in %v out %v delivered %v failed %v over %d s, want 0.8 0.6 0.6 0.2 over 5",
			s.InPerSecond, s.OutPerSecond, s.DeliveredPS, s.FailedPS, s.WindowSeconds)
	}
	if s.Latency.AcceptedToSubmitted.AvgMs != 1000 || s.Latency.SubmittedToDelivered.P99Ms != 2000 {
		t.Errorf("latency = %+v", s.Latency)
	}
	if s.Cost.Total != 0.6 || s.Cost.Parts != 6 || s.Cost.ByLink["sim1"] != 0.6 || s.Cost.ByLink["sim2"] != 0 {
		t.Errorf("cost = %+v, want 0.6 for 6 parts, all on sim1", s.Cost)
	}
	if len(s.Streams) != 2 || len(s.Queues) != 3 || len(s.Errors) != 0 {
		t.Errorf("streams %+v queues %+v errors %v, want 2 streams and 3 durable consumers", s.Streams, s.Queues, s.Errors)
	}

	var l struct {
		Links []LinkRow `json:"links"`
		Error string    `json:"error"`
	}
	getJSON("/api/v1/dashboard/links", &l)
	if len(l.Links) != 2 || l.Error != "" {
		t.Fatalf("links = %+v (error %q), want sim1 and sim2", l.Links, l.Error)
	}
	one := l.Links[0]
	if one.Link != "sim1" || one.State != "unknown" || one.ConfiguredRate != 200 || one.SendRate != 1.2 ||
		one.Parts != 6 || one.Cost != 0.6 || one.Price != 0.1 || one.Tokens != 200 {
		t.Errorf("sim1 = %+v, want unknown state (no report), rate 200, sending 1.2 parts/s, 6 parts, cost 0.6, 200 tokens", one)
	}

	// The raw JSON keys are the documented ones.
	resp, err := http.Get(srv.URL + "/api/v1/dashboard/stats")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, key := range []string{"in_per_second", "out_per_second", "delivered_per_second", "failed_per_second", "success_rate",
		"failure_rate", "accepted_to_submitted", "submitted_to_delivered", "avg_ms", "p99_ms", "by_link", "queues", "ack_pending"} {
		if !strings.Contains(string(raw), `"`+key+`"`) {
			t.Errorf("stats JSON lacks %q: %s", key, raw)
		}
	}
}

// TestThePageIsSelfContained: served at / only, as HTML, and it loads
// nothing from elsewhere (no build step, no external assets).
func TestThePageIsSelfContained(t *testing.T) {
	d := &Dashboard{}
	mux := http.NewServeMux()
	d.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	body := rec.Body.String()
	if m := regexp.MustCompile(`(?i:(src|href)\s*=|https?://|@import)|url\(`).FindString(body); m != "" {
		t.Fatalf("the page refers to something outside itself: %q", m)
	}
	for _, id := range []string{"in-rate", "out-rate", "success-rate", "failure-rate", "links", "queues", "campaign-bar", "campaign-input"} {
		if !strings.Contains(body, `id="`+id+`"`) {
			t.Errorf("the page lacks #%s", id)
		}
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nothing-here", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("GET /nothing-here = %d, want 404 (the page is at / only)", rec.Code)
	}
}
