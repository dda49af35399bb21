package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
)

// A STOP sent from a handset travels the whole way: the SMSC's deliver_sm,
// egress storing it decoded on sms.inbound.<link>, the policy stage's
// opt-out reader, and then a marketing message to that number is rejected
// opted_out while a transactional one is still delivered; START opts back in.
// This holds egress's MO shape and policy's reader to one contract (pkg/mo).
func TestAStopFromTheHandsetOptsOutOfMarketing(t *testing.T) {
	in := newInstance(t, "SMSFLOW_SMSC_SIM__ENABLED=false")
	sim, err := smscsim.Start(smscsim.Options{Listen: in.simAddr, SystemID: "smsflow", Password: "secret", Log: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	cfg := in.config(t)
	stages, _ := parseStages(strings.Join(allStages, ","))
	r := start(t, func(ctx context.Context) error {
		return run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	})
	in.waitReady(t, r)

	const number = "+420600000077"
	post := func(kind, text string) string {
		t.Helper()
		body := fmt.Sprintf(`{"to":%q,"text":%q,"kind":%q}`, number, text, kind)
		resp, err := client.Post("http://"+in.httpAddr+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ ID string }
		if err := decodeJSON(resp.Body, &out); err != nil || resp.StatusCode != http.StatusAccepted || out.ID == "" {
			t.Fatalf("POST %s: %d %v %v", kind, resp.StatusCode, out, err)
		}
		return out.ID
	}
	final := func(id string) (string, string) { return in.final(t, id) }
	if st, _ := final(post("marketing", "before")); st != "delivered" {
		t.Fatalf("marketing before STOP = %s, want delivered", st)
	}
	if err := sim.SendMO(number, "smsflow", "Stop"); err != nil {
		t.Fatalf("SendMO: %v", err)
	}
	// The reply is read asynchronously: wait until a marketing message is
	// refused, then every later one must be.
	probe := 0
	natstest.Eventually(t, wait, "a marketing message refused after STOP", func() bool {
		probe++
		_, reason := final(post("marketing", fmt.Sprint("probe ", probe)))
		return reason == "opted_out"
	})
	if st, reason := final(post("marketing", "after")); st != "rejected" || reason != "opted_out" {
		t.Errorf("marketing after STOP = %s/%s, want rejected/opted_out", st, reason)
	}
	if st, _ := final(post("transactional", "code 1234")); st != "delivered" {
		t.Errorf("transactional after STOP = %s, want delivered", st)
	}
	if err := sim.SendMO(number, "smsflow", "START"); err != nil {
		t.Fatalf("SendMO: %v", err)
	}
	natstest.Eventually(t, wait, "a marketing message delivered after START", func() bool {
		probe++
		st, _ := final(post("marketing", fmt.Sprint("welcome back ", probe)))
		return st == "delivered"
	})
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// final polls GET /v1/messages/{id} until the message is final and returns
// its status and reason.
func (in *instance) final(t *testing.T, id string) (string, string) {
	t.Helper()
	var v struct {
		Status, Reason string
		Final          bool
	}
	natstest.Eventually(t, wait, "message "+id+" final", func() bool {
		code, body := get(t, "http://"+in.httpAddr+"/v1/messages/"+id)
		return code == http.StatusOK && decodeJSON(strings.NewReader(body), &v) == nil && v.Final
	})
	return v.Status, v.Reason
}
