package ingest

// DELETE /v1/messages/{id} cancels a message that waits for its send_at.
//
// A message can be cancelled only while its latest status is `scheduled`
// (or, for one scheduled so far ahead that its status events aged out of
// SMS_STATUS, while its schedule is still there). The cancel writes the
// terminal `rejected` status, reason `cancelled`, with a compare-and-set on
// that very event: when the server releases the message, the policy stage
// writes `released` with the same compare-and-set before anything else, so
// either the cancel wins (and policy acks the release without sending it) or
// the release does (and the cancel answers 409 "released"). Only then is the
// schedule purged; a release that slips in before the purge finds the
// terminal status and is dropped.

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// errNotScheduled: the message exists but is past (or not yet at) scheduled.
var errNotScheduled = errors.New("message is not scheduled")

// cancelAttempts bounds the compare-and-set loop, as in pkg/status.
const cancelAttempts = 8

// cancelView is the answer of DELETE /v1/messages/{id}: 200 with the
// cancelled status, or 409 with the status that made it impossible.
type cancelView struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	Final  bool   `json:"final"`
	Error  string `json:"error,omitempty"`
}

func (a *API) cancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !envelope.ValidID(id) {
		a.fail(w, http.StatusBadRequest, "invalid id", nil)
		return
	}
	if !a.js.Conn().IsConnected() {
		a.fail(w, http.StatusServiceUnavailable, "cannot cancel: NATS is unreachable; retrying is safe", nil)
		return
	}
	ev, err := a.cancelScheduled(r.Context(), id)
	switch {
	case err == nil:
		a.log.Info("scheduled message cancelled", "msg_id", id)
		writeJSON(w, http.StatusOK, cancelView{ID: id, Status: ev.Status, Reason: ev.Reason, Final: true})
	case errors.Is(err, status.ErrNotFound):
		a.fail(w, http.StatusNotFound, "no message "+id+" (yet)", nil)
	case errors.Is(err, errNotScheduled):
		msg := "only a scheduled message can be cancelled; this one is " + ev.Status
		if ev.Status == status.Accepted {
			msg += " (it may be about to be scheduled: try again in a moment)"
		}
		writeJSON(w, http.StatusConflict, cancelView{ID: id, Status: ev.Status, Reason: ev.Reason, Final: status.Terminal(ev.Status), Error: msg})
	default:
		a.log.Warn("cancel failed", "msg_id", id, "err", err)
		a.fail(w, http.StatusServiceUnavailable, "could not cancel; retrying is safe", nil)
	}
}

// cancelScheduled cancels id if it is scheduled and returns the terminal
// event it wrote. errNotScheduled comes with the latest event that stands in
// the way; status.ErrNotFound means there is no such message.
func (a *API) cancelScheduled(ctx context.Context, id string) (status.Event, error) {
	js := a.js
	statuses, err := js.Stream(ctx, streams.Status)
	if err != nil {
		return status.Event{}, fmt.Errorf("cancel %s: %w", id, err)
	}
	outbound, err := js.Stream(ctx, streams.Outbound)
	if err != nil {
		return status.Event{}, fmt.Errorf("cancel %s: %w", id, err)
	}
	schedule := streams.ScheduledSubject(id)
	for range cancelAttempts {
		var prev status.Event
		var last uint64
		raw, err := statuses.GetLastMsgForSubject(ctx, status.Subject(id))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			// No events: unknown, or scheduled longer ago than SMS_STATUS keeps.
			if _, err := outbound.GetLastMsgForSubject(ctx, schedule); errors.Is(err, jetstream.ErrMsgNotFound) {
				return status.Event{}, status.ErrNotFound
			} else if err != nil {
				return status.Event{}, fmt.Errorf("cancel %s: read schedule: %w", id, err)
			}
		case err != nil:
			return status.Event{}, fmt.Errorf("cancel %s: read status: %w", id, err)
		default:
			if prev, err = status.DecodeEvent(raw.Data); err != nil {
				return status.Event{}, fmt.Errorf("cancel %s: %w", id, err)
			}
			if prev.Status != status.Scheduled {
				return prev, errNotScheduled
			}
			last = raw.Sequence
		}
		ev := status.Event{ID: id, Status: status.Rejected, Reason: status.ReasonCancelled, Detail: "cancelled before its send_at",
			At: a.now().UTC(), Stage: "ingest", Campaign: prev.Campaign}
		data, err := status.EncodeEvent(ev)
		if err != nil {
			return status.Event{}, err
		}
		// The Nats-Msg-Id of every terminal event in pkg/status.
		_, err = js.PublishMsg(ctx, &nats.Msg{Subject: status.Subject(id), Data: data},
			jetstream.WithMsgID(id+".final"), jetstream.WithExpectLastSequencePerSubject(last))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // released, or another event, in between: look again
		}
		if err != nil {
			return status.Event{}, fmt.Errorf("cancel %s: publish: %w", id, err)
		}
		// The cancel stands from here; the purge only saves the release.
		if err := outbound.Purge(ctx, jetstream.WithPurgeSubject(schedule)); err != nil {
			// Policy drops the release when it comes: its status is terminal.
			a.log.Warn("cancelled, but the schedule could not be purged", "msg_id", id, "err", err)
		}
		return ev, nil
	}
	return status.Event{}, fmt.Errorf("cancel %s: lost the compare-and-set %d times", id, cancelAttempts)
}
