package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
)

// hooks is a webhook receiver that records each message's statuses in order
// and checks each signature with the README's algorithm. It drops a repeated
// X-Smsflow-Event-Id, as the README tells receivers to (delivery is at least
// once), and counts it.
type hooks struct {
	mu     sync.Mutex
	got    map[string][]string
	seen   map[string]bool
	dups   int
	badSig int
}

func (h *hooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts, sig, _ := strings.Cut(r.Header.Get("X-Smsflow-Signature"), ",v1=")
	mac := hmac.New(sha256.New, []byte("e2e-secret"))
	mac.Write([]byte(strings.TrimPrefix(ts, "t=") + "." + string(body)))
	var ev status.Event
	_ = json.Unmarshal(body, &ev)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		h.badSig++
	}
	eid := r.Header.Get("X-Smsflow-Event-Id")
	if h.seen[eid] {
		h.dups++
		return
	}
	h.seen[eid] = true
	h.got[ev.ID] = append(h.got[ev.ID], ev.Status)
}

// A campaign through the whole pipeline (policy, egress to the simulator,
// receipts, the status indexer, webhooks): GET /v1/campaigns counts every
// message under its final status, and each status reaches its webhook.
func TestACampaignIsCountedAndPushedEndToEnd(t *testing.T) {
	verifyNoLeaks(t)
	perMsg, dflt := &hooks{got: map[string][]string{}, seen: map[string]bool{}}, &hooks{got: map[string][]string{}, seen: map[string]bool{}}
	perSrv, dfltSrv := httptest.NewServer(perMsg), httptest.NewServer(dflt)
	defer perSrv.Close()
	defer dfltSrv.Close()
	in := newInstance(t, "SMSFLOW_WEBHOOKS__DEFAULT_URL="+dfltSrv.URL+"/hook", "SMSFLOW_WEBHOOKS__SECRET=e2e-secret")
	cfg := in.config(t)
	stages, _ := parseStages(strings.Join(allStages, ","))
	var logs natstest.Buffer
	log, _ := newLogger(cfg.Log, &logs)
	r := start(t, func(ctx context.Context) error { return run(ctx, cfg, stages, log, prometheus.NewRegistry()) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of run:\n%s", logs.String())
		}
	})
	in.waitReady(t, r)

	nc, err := nats.Connect("nats://" + in.natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	const n, invalid = 300, 30 // every 10th has a number policy rejects
	for i := range n {
		to := fmt.Sprintf("+4206%08d", i)
		if i%10 == 0 {
			to = "+1"
		}
		cb := ""
		if i%2 == 1 {
			cb = fmt.Sprintf(`,"callback_url":%q`, perSrv.URL+"/m")
		}
		id := fmt.Sprintf("e2e-%03d", i)
		body := fmt.Sprintf(`{"id":%q,"to":%q,"text":"Sale!","campaign":"e2e"%s}`, id, to, cb)
		if _, err := js.Publish(ctx, "sms.outbound", []byte(body), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}

	want := fmt.Sprintf(`{"campaign":"e2e","total":%d,"counts":{"delivered":%d,"rejected":%d},"terminal":%d,"progress":1}`, n, n-invalid, invalid, n)
	var last string
	natstest.Eventually(t, 40*time.Second, "GET /v1/campaigns/e2e counts every message delivered or rejected", func() bool {
		_, last = get(t, "http://"+in.httpAddr+"/v1/campaigns/e2e")
		return strings.TrimSpace(last) == want
	})
	count := func(h *hooks) (int, int) {
		h.mu.Lock()
		defer h.mu.Unlock()
		sum := 0
		for _, v := range h.got {
			sum += len(v)
		}
		return len(h.got), sum
	}
	// accepted, queued, submitted, delivered for the valid; accepted, rejected for the rest.
	wantEvents := (n-invalid)*4 + invalid*2
	deadline := time.Now().Add(30 * time.Second)
	for {
		m1, e1 := count(perMsg)
		m2, e2 := count(dflt)
		if m1+m2 == n && e1+e2 == wantEvents {
			break
		}
		if time.Now().After(deadline) {
			_, metrics := get(t, "http://"+in.httpAddr+"/metrics")
			var wm []string
			for _, l := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(l, "smsflow_webhooks_events_total") {
					wm = append(wm, l)
				}
			}
			t.Fatalf("after 30s: webhooks delivered %d statuses of %d messages, want %d of %d; %v", e1+e2, m1+m2, wantEvents, n, wm)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, h := range []*hooks{perMsg, dflt} {
		h.mu.Lock()
		for id, sts := range h.got {
			var i int
			fmt.Sscanf(id, "e2e-%d", &i)
			lifeOK := []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}
			if i%10 == 0 {
				lifeOK = []string{status.Accepted, status.Rejected}
			}
			if !slices.Equal(sts, lifeOK) {
				t.Errorf("%s: webhook got %v, want %v", id, sts, lifeOK)
			}
			if (h == perMsg) != (i%2 == 1) {
				t.Errorf("%s went to the wrong receiver", id)
			}
		}
		if h.badSig != 0 {
			t.Errorf("%d webhook requests with a bad signature", h.badSig)
		}
		if h.dups != 0 {
			t.Logf("%d repeated deliveries (a record write failed after a POST), dropped by event id", h.dups)
		}
		h.mu.Unlock()
	}
	nc.Close()
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}
