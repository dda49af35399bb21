package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/smsflow/smsflow/pkg/status"
)

// GET /v1/campaigns/{campaign} answers the counters the status indexer keeps:
// each message once, under its latest status, and the share that ended.
func TestACampaignAnswersItsCountsPerLatestStatus(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	const name = "black friday/2026"
	moves := [][2]string{ // from, to: as the indexer records each message's changes
		{"", status.Accepted}, {status.Accepted, status.Queued}, {status.Queued, status.Submitted}, {status.Submitted, status.Delivered},
		{"", status.Accepted}, {status.Accepted, status.Queued},
		{"", status.Accepted}, {status.Accepted, status.Rejected},
		{"", status.Accepted}, {status.Accepted, status.Queued}, {status.Queued, status.Submitted}, {status.Submitted, status.Undelivered},
	}
	for i, mv := range moves {
		if err := status.AddCounts(ctx, e.js, string(rune('a'+i)), status.Transition(name, mv[0], mv[1])); err != nil {
			t.Fatal(err)
		}
	}
	r := e.do(t, http.MethodGet, "/v1/campaigns/"+url.PathEscape(name), nil)
	if r.code != http.StatusOK {
		t.Fatalf("status %d: %s", r.code, r.raw)
	}
	var got map[string]any
	if err := json.Unmarshal(r.raw, &got); err != nil {
		t.Fatal(err)
	}
	want := `{"campaign":"black friday/2026","counts":{"delivered":1,"queued":1,"rejected":1,"undelivered":1},"progress":0.75,"terminal":3,"total":4}`
	if b, _ := json.Marshal(got); string(b) != want {
		t.Fatalf("answer = %s\nwant     %s", b, want)
	}
}

func TestAnUnknownOrInvalidCampaign(t *testing.T) {
	e := newEnv(t, Options{})
	if r := e.do(t, http.MethodGet, "/v1/campaigns/nobody", nil); r.code != http.StatusNotFound {
		t.Fatalf("unknown campaign: status %d, want 404: %s", r.code, r.raw)
	}
	if r := e.do(t, http.MethodGet, "/v1/campaigns/"+strings.Repeat("x", 65), nil); r.code != http.StatusBadRequest {
		t.Fatalf("a 65-byte name: status %d, want 400: %s", r.code, r.raw)
	}
}
