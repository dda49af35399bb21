package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/streams"
)

func TestLinksCanBePausedResumedAndListed(t *testing.T) {
	e := newEnv(t, Options{Links: []string{"cz1", "cz2"}})
	ctx := context.Background()
	kv, err := e.js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		t.Fatal(err)
	}
	if err := linkstate.PutHealth(ctx, kv, linkstate.Health{Link: "cz2", Instance: "h:1", Bound: true, ConfiguredRate: 50, EffectiveRate: 50, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if r := e.do(t, http.MethodPost, "/v1/links/cz1/pause?reason=maintenance", nil); r.code != http.StatusOK {
		t.Fatalf("pause: HTTP %d %s", r.code, r.raw)
	}
	entry, err := kv.Get(ctx, linkstate.ControlKey("cz1"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := linkstate.ParseControl(entry.Value()); err != nil || !c.Paused || c.Reason != "maintenance" {
		t.Fatalf("control after pause = %+v, %v", c, err)
	}
	if r := e.do(t, http.MethodPost, "/v1/links/nope/pause", nil); r.code != http.StatusNotFound {
		t.Fatalf("pausing an unknown link: HTTP %d, want 404", r.code)
	}

	r := e.do(t, http.MethodGet, "/v1/links", nil)
	var list struct{ Links []linkstate.View }
	if err := json.Unmarshal(r.raw, &list); r.code != http.StatusOK || err != nil {
		t.Fatalf("list: HTTP %d %s", r.code, r.raw)
	}
	if len(list.Links) != 2 || list.Links[0].Link != "cz1" || list.Links[0].Control == nil || !list.Links[0].Control.Paused ||
		list.Links[1].Link != "cz2" || !list.Links[1].Bound {
		t.Fatalf("links = %+v; want cz1 paused, cz2 bound", list.Links)
	}

	if r := e.do(t, http.MethodPost, "/v1/links/cz1/resume", nil); r.code != http.StatusOK {
		t.Fatalf("resume: HTTP %d %s", r.code, r.raw)
	}
	entry, _ = kv.Get(ctx, linkstate.ControlKey("cz1"))
	if c, _ := linkstate.ParseControl(entry.Value()); c.Paused {
		t.Fatal("still paused after resume")
	}
}

func TestABatchWithOneIdempotencyKeyTwiceIsRefused(t *testing.T) {
	e := newEnv(t, Options{})
	body := []byte(`{"messages":[{"to":"+420600000001","text":"a","external_id":"k1"},{"to":"+420600000002","text":"b","external_id":"k1"},{"id":"x","to":"+420600000003","text":"c"},{"id":"x","to":"+420600000004","text":"d"}]}`)
	r := e.post(t, body)
	if r.code != http.StatusBadRequest || len(r.body.Errors) != 2 ||
		r.body.Errors[0].Index != 1 || r.body.Errors[0].Field != "external_id" || r.body.Errors[1].Index != 3 || r.body.Errors[1].Field != "id" {
		t.Fatalf("HTTP %d %s; want 400 naming external_id of message 1 and id of message 3", r.code, r.raw)
	}
}
