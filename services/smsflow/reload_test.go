package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/natstest"
)

// A reloaded config changes the policy while it runs: with no cap, a number
// gets every message; after a reload to daily_cap = 1, a fresh number gets
// one and the next is rejected daily_cp, and on_build judges by the new cap
// too. A reload that touches what needs a restart (a link) changes nothing.
func TestAReloadChangesThePolicyWithoutARestart(t *testing.T) {
	in := newInstance(t)
	cfg := in.config(t)
	stages, _ := parseStages(strings.Join(allStages, ","))
	reloads := make(chan config.Config)
	r := start(t, func(ctx context.Context) error {
		return runWith(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry(), reloads)
	})
	in.waitReady(t, r)

	n := 0
	send := func(to string) (string, string) {
		t.Helper()
		n++
		body := fmt.Sprintf(`{"to":%q,"text":"offer %d","kind":"marketing"}`, to, n)
		resp, err := client.Post("http://"+in.httpAddr+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ ID string }
		err = decodeJSON(resp.Body, &out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST: %d %v", resp.StatusCode, err)
		}
		return in.final(t, out.ID)
	}
	for range 3 {
		if st, _ := send("+420600000081"); st != "delivered" {
			t.Fatalf("without a cap: %s, want delivered", st)
		}
	}

	// A change that needs a restart is refused whole: the cap below does
	// not come in with it.
	bad := cfg
	bad.Policy.DailyCap = 1
	bad.Links = map[string]config.Link{}
	reloads <- bad
	time.Sleep(200 * time.Millisecond) // the refusal is only logged
	if st, _ := send("+420600000081"); st != "delivered" {
		t.Fatalf("after a refused reload: %s, want delivered (no cap)", st)
	}

	next := cfg
	next.Policy.DailyCap, next.Policy.WeeklyCap = 1, 10
	reloads <- next
	// The reload is applied by the run's own goroutine: wait until a fresh
	// number's second message is refused, then check the exact picture.
	natstest.Eventually(t, wait, "the new cap in force", func() bool {
		to := fmt.Sprintf("+42060000%04d", 100+n)
		first, _ := send(to)
		_, reason := send(to)
		return first == "delivered" && reason == "daily_cp"
	})
	if st, reason := send("+420600000999"); st != "delivered" || reason != "" {
		t.Errorf("a fresh number's first message = %s/%s, want delivered", st, reason)
	}
	if st, reason := send("+420600000999"); st != "rejected" || reason != "daily_cp" {
		t.Errorf("its second = %s/%s, want rejected/daily_cp", st, reason)
	}
	// on_build judges by the new rules as well.
	resp, err := client.Post("http://"+in.httpAddr+"/v1/messages", "application/json",
		strings.NewReader(`{"policy":"on_build","dry_run":true,"messages":[{"to":"+420600000999","text":"more"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var a struct{ Results []struct{ Rejected string } }
	err = decodeJSON(resp.Body, &a)
	resp.Body.Close()
	if err != nil || len(a.Results) != 1 || a.Results[0].Rejected != "daily_cp" {
		t.Errorf("on_build after the reload = %+v, %v; want daily_cp", a, err)
	}
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}
