package ingest

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/streams"
)

// listLinks answers GET /v1/links: every configured link with its health
// (as its egress instance last reported it) and its operator control.
func (a *API) listLinks(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	kv, err := a.js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		a.fail(w, http.StatusServiceUnavailable, "link state unavailable", nil)
		return
	}
	views, err := linkstate.List(ctx, kv, time.Now())
	if err != nil {
		a.fail(w, http.StatusServiceUnavailable, "link state unavailable", nil)
		return
	}
	// Configured links that never reported still appear, as not bound.
	for _, name := range a.opts.Links {
		if !slices.ContainsFunc(views, func(v linkstate.View) bool { return v.Link == name }) {
			views = append(views, linkstate.View{Health: linkstate.Health{Link: name}})
		}
	}
	slices.SortFunc(views, func(x, y linkstate.View) int {
		switch {
		case x.Link < y.Link:
			return -1
		case x.Link > y.Link:
			return 1
		}
		return 0
	})
	writeJSON(w, http.StatusOK, map[string]any{"links": views})
}

// pauseLink answers POST /v1/links/{name}/pause and /resume, with an
// optional ?reason=. Every egress instance of the link obeys within a moment.
func (a *API) pauseLink(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if len(a.opts.Links) > 0 && !slices.Contains(a.opts.Links, name) {
			a.fail(w, http.StatusNotFound, "no link "+name+" in the config", nil)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		kv, err := a.js.KeyValue(ctx, streams.BucketLinks)
		if err == nil {
			err = linkstate.SetPaused(ctx, kv, name, paused, r.URL.Query().Get("reason"))
		}
		if err != nil {
			a.log.Warn("link control failed", "link", name, "paused", paused, "err", err)
			a.fail(w, http.StatusServiceUnavailable, "could not record the link control; retry", nil)
			return
		}
		a.log.Info("link control set", "link", name, "paused", paused)
		writeJSON(w, http.StatusOK, map[string]any{"link": name, "paused": paused})
	}
}
