package ingest

import (
	"errors"
	"net/http"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// campaignReader reads the campaign counters of SMS_COUNTS. The stream
// handle is looked up once: a dashboard polling every second then costs one
// direct get per status, whatever the campaign's size.
type campaignReader struct {
	mu     sync.Mutex
	counts jetstream.Stream
}

// getCampaign answers GET /v1/campaigns/{campaign}: the campaign's messages
// counted once each, under their latest status, with the share that ended.
// The status indexer keeps the counters; they trail the status events by
// what it has not read yet.
func (a *API) getCampaign(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("campaign")
	if name == "" || len(name) > envelope.MaxCampaignLen {
		a.fail(w, http.StatusBadRequest, "invalid campaign name", nil)
		return
	}
	if !a.js.Conn().IsConnected() {
		a.fail(w, http.StatusServiceUnavailable, "status store unavailable: NATS is unreachable", nil)
		return
	}
	a.campaigns.mu.Lock()
	if a.campaigns.counts == nil {
		s, err := a.js.Stream(r.Context(), streams.Counts)
		if err != nil {
			a.campaigns.mu.Unlock()
			a.log.Warn("campaign counters unavailable", "err", err)
			a.fail(w, http.StatusServiceUnavailable, "campaign counters unavailable", nil)
			return
		}
		a.campaigns.counts = s
	}
	counts := a.campaigns.counts
	a.campaigns.mu.Unlock()
	c, err := status.Counts(r.Context(), counts, name)
	if errors.Is(err, status.ErrNoCampaign) {
		a.fail(w, http.StatusNotFound, "no messages for campaign "+name+" (yet)", nil)
		return
	}
	if err != nil {
		a.log.Warn("campaign lookup failed", "campaign", name, "err", err)
		a.fail(w, http.StatusServiceUnavailable, "campaign counters unavailable", nil)
		return
	}
	writeJSON(w, http.StatusOK, c)
}
