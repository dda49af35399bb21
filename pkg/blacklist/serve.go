package blacklist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/smsflow/smsflow/pkg/phone"
)

// Request is the JSON body of a request on <subject>.add, .remove or .check
// and of POST /v1/blacklist.
type Request struct {
	Number string `json:"number"`
	Note   string `json:"note,omitempty"`
}

// Reply is the answer: the Status, or Error (and Status's number, when it
// could be normalised).
type Reply struct {
	Status
	Error string `json:"error,omitempty"`
}

// requestTimeout bounds one request's KV write and its application here.
const requestTimeout = 5 * time.Second

// subscribe answers <subject>.add, .remove and .check in the queue group
// "blacklist", so one instance answers each request, until the subscription
// ends. Requests are served one at a time, each bounded by requestTimeout.
func (l *List) subscribe(ctx context.Context) (*nats.Subscription, error) {
	sub, err := l.nc.QueueSubscribe(l.opts.Subject+".*", "blacklist", func(msg *nats.Msg) {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		op := strings.TrimPrefix(msg.Subject, l.opts.Subject+".")
		reply := l.handle(rctx, op, msg.Data)
		b, _ := json.Marshal(reply)
		if err := msg.Respond(b); err != nil && !errors.Is(err, nats.ErrMsgNoReply) {
			l.log.Warn("blacklist: reply failed", "subject", msg.Subject, "err", err)
		}
	})
	if err == nil {
		err = l.nc.FlushTimeout(requestTimeout) // the server knows the subscription before Ready
	}
	if err != nil {
		return nil, fmt.Errorf("blacklist: subscribe %s.*: %w", l.opts.Subject, err)
	}
	return sub, nil
}

func (l *List) handle(ctx context.Context, op string, data []byte) Reply {
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		return Reply{Error: `request must be JSON like {"number":"+420600000001","note":"…"}: ` + err.Error()}
	}
	var st Status
	var err error
	switch op {
	case "add":
		st, err = l.Add(ctx, req.Number, req.Note)
	case "remove":
		st, err = l.Remove(ctx, req.Number, req.Note)
	case "check":
		st, err = l.Check(req.Number)
	default:
		return Reply{Error: fmt.Sprintf("unknown operation %q (want add, remove or check)", op)}
	}
	if err != nil {
		return Reply{Status: Status{Number: st.Number}, Error: err.Error()}
	}
	return Reply{Status: st}
}

// maxRequestBytes bounds an HTTP request body.
const maxRequestBytes = 4 << 10

// Register adds the HTTP API to mux:
//
//	POST   /v1/blacklist            {"number":"+420600000001","note":"…"}  add
//	DELETE /v1/blacklist/{number}   remove (allow even if a list names it)
//	GET    /v1/blacklist/{number}   check
//
// Each answers 200 with a Reply; 400 for an invalid number or body, 503
// before the list is loaded or when the KV bucket cannot be written.
func (l *List) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/blacklist", func(w http.ResponseWriter, r *http.Request) {
		var req Request
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, Reply{Error: `body must be JSON like {"number":"+420600000001","note":"…"}: ` + err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		st, err := l.Add(ctx, req.Number, req.Note)
		l.answer(w, st, err)
	})
	mux.HandleFunc("DELETE /v1/blacklist/{number}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		st, err := l.Remove(ctx, r.PathValue("number"), r.URL.Query().Get("note"))
		l.answer(w, st, err)
	})
	mux.HandleFunc("GET /v1/blacklist/{number}", func(w http.ResponseWriter, r *http.Request) {
		st, err := l.Check(r.PathValue("number"))
		l.answer(w, st, err)
	})
}

func (l *List) answer(w http.ResponseWriter, st Status, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, Reply{Status: st})
	case errors.Is(err, phone.ErrInvalid):
		writeJSON(w, http.StatusBadRequest, Reply{Error: err.Error()})
	default:
		l.log.Warn("blacklist request failed", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, Reply{Status: Status{Number: st.Number}, Error: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
