package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Health answers /healthz and /readyz.
type Health struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Streams []string // must all exist for ready
	// BoundLinks counts the SMPP links bound in this process; nil when egress
	// does not run here (then no link is required).
	BoundLinks func() int
}

// Healthz answers 200 while the process serves HTTP: a liveness probe that
// fails only when the process is stuck or gone.
func (h Health) Healthz(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }

// Readyz answers 200 when NATS is connected, every stream is there and (if
// egress runs here) at least one link is bound; else 503 with one line per
// problem.
func (h Health) Readyz(w http.ResponseWriter, r *http.Request) {
	if problems := h.problems(r.Context()); len(problems) > 0 {
		http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

func (h Health) problems(ctx context.Context) []string {
	var problems []string
	if !h.NC.IsConnected() {
		problems = append(problems, "nats not connected")
	} else {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, s := range h.Streams {
			if _, err := h.JS.Stream(ctx, s); err != nil {
				problems = append(problems, "stream "+s+": "+err.Error())
			}
		}
	}
	if h.BoundLinks != nil && h.BoundLinks() == 0 {
		problems = append(problems, "no SMPP link bound")
	}
	return problems
}
