package test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
)

// The running binary takes a new policy on SIGHUP: its config file gets a
// daily cap of 1, and from the reload on a number's second marketing message
// of the day is rejected daily_cp, with no restart.
func TestSIGHUPReloadsThePolicy(t *testing.T) {
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e"})
	p := setup(t, t.TempDir(), sim.Addr(), "")
	p.start()

	final := func(id string) (string, string) {
		t.Helper()
		var v struct {
			Status, Reason string
			Final          bool
		}
		natstest.Eventually(t, time.Minute, "message "+id+" final", func() bool {
			body, err := httpGet("http://" + p.httpAddr + "/v1/messages/" + id)
			return err == nil && json.Unmarshal([]byte(body), &v) == nil && v.Final
		})
		return v.Status, v.Reason
	}
	n := 0
	send := func(to string) (string, string) {
		t.Helper()
		n++
		code, body := p.postJSON("/v1/messages", map[string]string{"to": to, "text": fmt.Sprint("offer ", n)})
		var out struct{ ID string }
		if code != 202 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("POST: %d %s", code, body)
		}
		return final(out.ID)
	}
	for range 2 {
		if st, _ := send("+420600000071"); st != "delivered" {
			t.Fatalf("before the reload: %s, want delivered (no cap)", st)
		}
	}

	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.cfgPath, append(cfg, "\n[policy]\ndaily_cap = 1\nweekly_cap = 5\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, "the reload logged", func() bool {
		return strings.Contains(p.logs.String(), "config reloaded")
	})
	if st, reason := send("+420600000072"); st != "delivered" || reason != "" {
		t.Errorf("a fresh number's first message = %s/%s, want delivered", st, reason)
	}
	if st, reason := send("+420600000072"); st != "rejected" || reason != "daily_cp" {
		t.Errorf("its second = %s/%s, want rejected/daily_cp", st, reason)
	}
	if strings.Contains(p.logs.String(), "config reload refused") {
		t.Errorf("the reload was refused:\n%s", p.logs.Tail(2048))
	}
	p.stop()
}
