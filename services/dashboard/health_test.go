package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

func probe(h http.HandlerFunc) (int, string) {
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	return rec.Code, rec.Body.String()
}

func TestReadyzNamesWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	nc, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	bound := 0
	h := Health{NC: nc, JS: js, Streams: []string{streams.Outbound, streams.Status}, BoundLinks: func() int { return bound }}

	if code, body := probe(h.Healthz); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz = %d %q, want 200 ok", code, body)
	}
	code, body := probe(h.Readyz)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "stream SMS_OUTBOUND") ||
		!strings.Contains(body, "stream SMS_STATUS") || !strings.Contains(body, "no SMPP link bound") {
		t.Fatalf("/readyz before streams = %d %q, want 503 naming both streams and the link", code, body)
	}

	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatal(err)
	}
	if code, body := probe(h.Readyz); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "no SMPP link bound" {
		t.Fatalf("/readyz with streams, no link = %d %q, want 503 naming only the link", code, body)
	}
	bound = 1
	if code, body := probe(h.Readyz); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz with streams and a link = %d %q, want 200 ready", code, body)
	}
	noEgress := h
	noEgress.BoundLinks = nil // egress runs elsewhere: no link is required here
	bound = 0
	if code, _ := probe(noEgress.Readyz); code != http.StatusOK {
		t.Fatalf("/readyz without egress here = %d, want 200", code)
	}

	nc.Close()
	if code, body := probe(noEgress.Readyz); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "nats not connected" {
		t.Fatalf("/readyz after NATS closed = %d %q, want 503 nats not connected", code, body)
	}
	if code, _ := probe(h.Healthz); code != http.StatusOK {
		t.Fatalf("/healthz after NATS closed = %d, want 200: the process is still up", code)
	}
}
