// Package ingest is the HTTP door into the pipeline: POST /v1/messages
// validates one envelope or a batch, publishes each to sms.outbound with
// Nats-Msg-Id = external_id or id, and answers 202 with the ids; GET
// /v1/messages/{id} answers the latest status and its history.
//
// A batch is all or nothing at validation: any invalid message makes the
// whole request a 400 listing every problem by index and field, and nothing
// is published. Publishing is idempotent, so a client that retries a request
// (after a timeout, say) does not double its messages.
package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/pkg/status"
)

// Options configure the API.
type Options struct {
	MaxBodyBytes int64    // larger bodies get 413
	MaxBatch     int      // more messages in one request get 413
	Region       string   // default region for numbers without a country prefix
	MaxChars     int      // text limit in characters
	Links        []string // configured link names, for /v1/links

	// Rules are the policy rules for "policy":"on_build" (onbuild.go); nil refuses it.
	Rules *rules.Rules
}

// API serves the /v1/messages endpoints.
type API struct {
	js   jetstream.JetStream
	pub  *status.Publisher
	opts Options
	log  *slog.Logger
	m    *Metrics
	now  func() time.Time

	campaigns campaignReader              // GET /v1/campaigns, in campaigns.go
	rules     atomic.Pointer[rules.Rules] // on_build's, Options.Rules until SetRules (onbuild.go)
}

// New makes the API.
func New(js jetstream.JetStream, pub *status.Publisher, opts Options, log *slog.Logger, m *Metrics) *API {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 10000
	}
	a := &API{js: js, pub: pub, opts: opts, log: log, m: m, now: time.Now}
	a.SetRules(opts.Rules)
	return a
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/messages", a.post)
	mux.HandleFunc("GET /v1/messages/{id}", a.get)
	mux.HandleFunc("DELETE /v1/messages/{id}", a.cancel) // cancel.go
	mux.HandleFunc("GET /v1/campaigns/{campaign}", a.getCampaign)
	mux.HandleFunc("GET /v1/links", a.listLinks)
	mux.HandleFunc("POST /v1/links/{name}/pause", a.pauseLink(true))
	mux.HandleFunc("POST /v1/links/{name}/resume", a.pauseLink(false))
}

// itemError is a field error of one message of a request.
type itemError struct {
	Index int    `json:"index"`
	Field string `json:"field"`
	Error string `json:"error"`
}

type errorBody struct {
	Error  string      `json:"error"`
	Errors []itemError `json:"errors,omitempty"`
}

func (a *API) post(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", a.opts.MaxBodyBytes), nil)
		return
	}
	if err != nil {
		a.fail(w, http.StatusBadRequest, "cannot read body: "+err.Error(), nil)
		return
	}
	raws, batch, err := split(body)
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if len(raws) > a.opts.MaxBatch {
		a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%d messages in one request, at most %d", len(raws), a.opts.MaxBatch), nil)
		return
	}
	if len(raws) == 0 {
		a.fail(w, http.StatusBadRequest, "no messages", nil)
		return
	}
	msgs := make([]envelope.Message, len(raws))
	datas := make([][]byte, len(raws))
	var errs []itemError
	now := a.now()
	firstWith := map[string]int{} // "msg:"+Nats-Msg-Id and "id:"+id -> index of the first message using it
	for i, raw := range raws {
		m, err := envelope.Decode(raw)
		if err != nil {
			var fe *envelope.FieldError
			if errors.As(err, &fe) {
				errs = append(errs, itemError{Index: i, Field: fe.Field, Error: fe.Msg})
			} else {
				errs = append(errs, itemError{Index: i, Field: "", Error: err.Error()})
			}
			continue
		}
		if _, ferrs := envelope.Prepare(m, now, a.opts.Region, a.opts.MaxChars); len(ferrs) > 0 {
			for _, fe := range ferrs {
				errs = append(errs, itemError{Index: i, Field: fe.Field, Error: fe.Msg})
			}
			continue
		}
		if m.ID == "" {
			m.ID = idFor(m, now)
		}
		// Two messages of one request with one idempotency key: the stream
		// would keep the first and drop the second, yet answer its id.
		if j, dup := firstWith["msg:"+m.MsgID()]; dup {
			field := "id"
			if m.ExternalID != "" {
				field = "external_id"
			}
			errs = append(errs, itemError{Index: i, Field: field, Error: fmt.Sprintf("same as message %d: each message needs its own", j)})
			continue
		}
		if j, dup := firstWith["id:"+m.ID]; dup {
			errs = append(errs, itemError{Index: i, Field: "id", Error: fmt.Sprintf("same as message %d: each message needs its own", j)})
			continue
		}
		firstWith["msg:"+m.MsgID()], firstWith["id:"+m.ID] = i, i
		data, err := envelope.Encode(m)
		if err == nil && len(data) > maxQueueBytes {
			err = fmt.Errorf("envelope is %d bytes once encoded, more than %d", len(data), maxQueueBytes)
		}
		if err != nil {
			// NATS would refuse it on every retry: a client error, not a 503.
			errs = append(errs, itemError{Index: i, Field: "", Error: err.Error()})
			continue
		}
		msgs[i], datas[i] = m, data
	}
	bo, boErr := readBuildOptions(body, batch)
	if len(errs) > 0 && !(boErr == nil && bo.DryRun) {
		a.m.requests.WithLabelValues("invalid").Inc()
		a.fail(w, http.StatusBadRequest, fmt.Sprintf("%d invalid field(s); nothing was queued", len(errs)), errs)
		return
	}
	if boErr != nil || bo.Policy == PolicyOnBuild {
		if boErr != nil {
			a.m.requests.WithLabelValues("invalid").Inc()
			a.fail(w, http.StatusBadRequest, boErr.Error(), nil)
			return
		}
		// A dry run answers for every message, the invalid ones too.
		a.postOnBuild(w, r, msgs, datas, bo.DryRun, errs) // onbuild.go
		return
	}
	if !a.js.Conn().IsConnected() {
		a.m.requests.WithLabelValues("error").Inc()
		a.log.Warn("not connected to NATS, refusing messages", "messages", len(msgs))
		a.fail(w, http.StatusServiceUnavailable, "could not queue the messages: NATS is unreachable; retrying the same request is safe", nil)
		return
	}
	if err := a.publish(r.Context(), msgs, datas); err != nil {
		a.m.requests.WithLabelValues("error").Inc()
		a.log.Error("publish to sms.outbound failed", "messages", len(msgs), "err", err)
		a.fail(w, http.StatusServiceUnavailable, "could not queue the messages; retrying the same request is safe", nil)
		return
	}
	a.m.requests.WithLabelValues("accepted").Inc()
	a.m.messages.Add(float64(len(msgs)))
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	if batch {
		writeJSON(w, http.StatusAccepted, map[string]any{"ids": ids})
	} else {
		writeJSON(w, http.StatusAccepted, map[string]any{"id": ids[0]})
	}
}

// idFor gives a message without an id one: derived from external_id when it
// has one, so a retried request names the same message, else a new ULID.
func idFor(m envelope.Message, now time.Time) string {
	if m.ExternalID != "" {
		sum := sha256.Sum256([]byte(m.ExternalID))
		return "x" + hex.EncodeToString(sum[:16])
	}
	return envelope.NewID(now)
}

// split reads a body that is one envelope or {"messages":[...]}.
func split(body []byte) (raws []json.RawMessage, batch bool, err error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, false, fmt.Errorf("body is not a JSON object: %v", err)
	}
	list, ok := probe["messages"]
	if !ok {
		return []json.RawMessage{body}, false, nil
	}
	if err := json.Unmarshal(list, &raws); err != nil {
		return nil, true, errors.New(`"messages" must be an array of envelopes`)
	}
	return raws, true, nil
}

// maxPending bounds the async publishes in flight for one request.
const maxPending = 1024

// maxQueueBytes bounds an encoded envelope on sms.outbound: SMS_OUTBOUND and
// SMS_EGRESS take at most envelope.MaxEncodedBytes per message, headers
// included, and the policy stage adds fields (accepted_at, expires_at, pool)
// before it forwards, so leave room for both.
const maxQueueBytes = envelope.MaxEncodedBytes - 4096

// publish sends every message, encoded in datas, with async publishes,
// bounded in flight, and waits for every ack; the first failure fails the
// request (the client retries; Nats-Msg-Id drops what already landed).
func (a *API) publish(ctx context.Context, msgs []envelope.Message, datas [][]byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, min(len(msgs), maxPending))
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	for i, m := range msgs {
		f, err := a.js.PublishMsgAsync(&nats.Msg{Subject: "sms.outbound", Data: datas[i]}, jetstream.WithMsgID(m.MsgID()))
		if err != nil {
			return err
		}
		futures = append(futures, f)
		if len(futures) == maxPending {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	return wait()
}

// messageView is the answer of GET /v1/messages/{id}.
type messageView struct {
	ID      string         `json:"id"`
	Status  string         `json:"status"`
	Reason  string         `json:"reason,omitempty"`
	Final   bool           `json:"final"`
	History []status.Event `json:"history"`
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !envelope.ValidID(id) {
		a.fail(w, http.StatusBadRequest, "invalid id", nil)
		return
	}
	if !a.js.Conn().IsConnected() {
		a.fail(w, http.StatusServiceUnavailable, "status store unavailable: NATS is unreachable", nil)
		return
	}
	h, err := a.pub.History(r.Context(), id, 1000)
	if errors.Is(err, status.ErrNotFound) || (err == nil && len(h) == 0) {
		a.fail(w, http.StatusNotFound, "no status for message "+id+" (yet)", nil)
		return
	}
	if err != nil {
		a.log.Warn("status lookup failed", "msg_id", id, "err", err)
		a.fail(w, http.StatusServiceUnavailable, "status store unavailable", nil)
		return
	}
	last := h[len(h)-1]
	for _, ev := range h { // a terminal status is the message's status, even if an event came after it
		if status.Terminal(ev.Status) {
			last = ev
			break
		}
	}
	writeJSON(w, http.StatusOK, messageView{ID: id, Status: last.Status, Reason: last.Reason, Final: status.Terminal(last.Status), History: h})
}

func (a *API) fail(w http.ResponseWriter, code int, msg string, errs []itemError) {
	writeJSON(w, code, errorBody{Error: msg, Errors: errs})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Metrics of the HTTP ingest.
type Metrics struct {
	requests *prometheus.CounterVec
	messages prometheus.Counter
	onBuild  *prometheus.CounterVec // onbuild.go
}

// NewMetrics registers the API's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "ingest", Name: "requests_total",
			Help: "POST /v1/messages requests by result (accepted, invalid, error)."}, []string{"result"}),
		messages: f.NewCounter(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "ingest", Name: "messages_total",
			Help: "Messages published to sms.outbound by the HTTP API."}),
	}
	for _, r := range []string{"accepted", "invalid", "error"} {
		m.requests.WithLabelValues(r)
	}
	m.onBuild = newOnBuildMetric(f)
	return m
}
