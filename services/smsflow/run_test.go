package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
)

const wait = 45 * time.Second // bound on every wait; the happy path takes a second or two, a busy -race run much longer

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// instance is the addresses one test's smsflow listens on.
type instance struct {
	natsAddr, httpAddr, simAddr string
	env                         map[string]string
}

// newInstance points the embedded defaults at free ports and a temp data dir;
// extra is more KEY=VALUE variables, overriding these.
func newInstance(t *testing.T, extra ...string) *instance {
	t.Helper()
	in := &instance{natsAddr: freeAddr(t), httpAddr: freeAddr(t), simAddr: freeAddr(t)}
	in.env = map[string]string{
		"SMSFLOW_NATS__LISTEN":         in.natsAddr,
		"SMSFLOW_NATS__DATA_DIR":       t.TempDir(),
		"SMSFLOW_HTTP__LISTEN":         in.httpAddr,
		"SMSFLOW_SMSC_SIM__LISTEN":     in.simAddr,
		"SMSFLOW_LINKS__SIM1__ADDRESS": in.simAddr,
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		in.env[k] = v
	}
	return in
}

func (in *instance) environ() []string {
	out := []string{"HOME=/nonexistent", "PATH=/bin"} // not ours: ignored
	for k, v := range in.env {
		out = append(out, k+"="+v)
	}
	return out
}

func (in *instance) config(t *testing.T) config.Config {
	t.Helper()
	cfg, err := config.Load("", in.environ)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// running is a run (or runCommand) in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start calls f in a goroutine with a context that stop cancels; if the test
// ends without stop, the cleanup stops it.
func start(t *testing.T, f func(ctx context.Context) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(wait):
		}
	})
	return r
}

// stop cancels the context and returns what the run returned; it fails the
// test if that takes longer than bound.
func (r *running) stop(t *testing.T, bound time.Duration) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(bound):
		t.Fatalf("run did not return within %v of cancel", bound)
		return nil
	}
}

// client is an HTTP client that keeps no idle connections, so no goroutine
// outlives a request.
var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /readyz until it answers 200, failing early if run returns.
func (in *instance) waitReady(t *testing.T, r *running) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		select {
		case err := <-r.done:
			t.Fatalf("run returned before ready: %v", err)
		default:
		}
		code, body := get(t, "http://"+in.httpAddr+"/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 after %v: %d %s", wait, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// messageView is the part of GET /v1/messages/{id} the tests read.
type messageView struct {
	ID      string         `json:"id"`
	Status  string         `json:"status"`
	Final   bool           `json:"final"`
	History []status.Event `json:"history"`
}

func (in *instance) message(t *testing.T, id string) (int, messageView) {
	t.Helper()
	code, body := get(t, "http://"+in.httpAddr+"/v1/messages/"+id)
	var v messageView
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("GET /v1/messages/%s: %v in %s", id, err, body)
		}
	}
	return code, v
}

// waitDelivered polls GET /v1/messages/{id} until its status is delivered.
func (in *instance) waitDelivered(t *testing.T, id string) messageView {
	t.Helper()
	var v messageView
	natstest.Eventually(t, wait, "want message "+id+" delivered", func() bool {
		var code int
		code, v = in.message(t, id)
		return code == http.StatusOK && v.Status == status.Delivered
	})
	return v
}

// verifyNoLeaks checks, when the test and its cleanups are done, that every
// goroutine started during the test has ended within a few seconds. The wait
// is for nats.go's fetch goroutines: one whose batch was not read to the end
// (status.History stops at the last event) lives until its request expires.
func verifyNoLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := goleak.Find(opt)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left 5s after the test: %v", err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func TestDefaultConfigDeliversAMessageEndToEnd(t *testing.T) {
	verifyNoLeaks(t)
	in := newInstance(t) // the embedded defaults, on free ports and a temp data dir
	cfg := in.config(t)
	reg := prometheus.NewRegistry()
	var logs natstest.Buffer
	log, err := newLogger(cfg.Log, &logs)
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseStages(strings.Join(allStages, ","))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, func(ctx context.Context) error { return run(ctx, cfg, stages, log, reg) })

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of run:\n%s", logs.String())
		}
	})
	in.waitReady(t, r)
	if code, body := get(t, "http://"+in.httpAddr+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s, want 200", code, body)
	}

	// A producer on the embedded server's client port, as the nats CLI would be.
	nc, err := nats.Connect("nats://" + in.natsAddr)
	if err != nil {
		t.Fatalf("connect to the embedded server on nats.listen: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	id := envelope.NewID(time.Now())
	events := make(chan status.Event, 16)
	sub, err := nc.Subscribe(status.Subject(id), func(m *nats.Msg) {
		var ev status.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			events <- ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	body := fmt.Sprintf(`{"id":%q,"to":"+420600000001","text":"Your code is 4821","kind":"transactional"}`, id)
	if _, err := js.Publish(ctx, "sms.outbound", []byte(body), jetstream.WithMsgID(id)); err != nil {
		t.Fatalf("publish on sms.outbound: %v", err)
	}

	var seen []string
	timeout := time.After(wait)
	for done := false; !done; {
		select {
		case ev := <-events:
			seen = append(seen, ev.Status)
			if status.Terminal(ev.Status) {
				if ev.Status != status.Delivered {
					t.Fatalf("terminal status %s (%+v), want delivered; events %v", ev.Status, ev, seen)
				}
				done = true
			}
		case <-timeout:
			t.Fatalf("no terminal status on %s within %v; events %v", status.Subject(id), wait, seen)
		}
	}

	v := in.waitDelivered(t, id)
	if !v.Final || v.ID != id {
		t.Fatalf("GET /v1/messages/%s = %+v, want final delivered", id, v)
	}
	var statuses []string
	for _, ev := range v.History {
		statuses = append(statuses, ev.Status)
	}
	if !strings.Contains(strings.Join(statuses, ","), status.Submitted) {
		t.Fatalf("history %v has no submitted event", statuses)
	}
	if code, _ := get(t, "http://"+in.httpAddr+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200", code)
	}
	code, metrics := get(t, "http://"+in.httpAddr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`smsflow_egress_submits_total{link="sim1",result="ok"} 1`,
		`smsflow_receipts_processed_total{result="delivered"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	sub.Unsubscribe()
	nc.Close()
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}

func TestReadyzAnswers503UntilALinkIsBound(t *testing.T) {
	verifyNoLeaks(t)
	// The link's password is wrong, so it never binds: the process is up, not ready.
	in := newInstance(t, "SMSFLOW_LINKS__SIM1__PASSWORD=wrongpw")
	cfg := in.config(t)
	stages, _ := parseStages("policy,egress,receipts,http")
	r := start(t, func(ctx context.Context) error {
		return run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	})
	natstest.Eventually(t, wait, "want /healthz 200", func() bool {
		code, _ := get(t, "http://"+in.httpAddr+"/healthz")
		return code == http.StatusOK
	})
	code, body := get(t, "http://"+in.httpAddr+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no SMPP link bound") {
		t.Fatalf("/readyz = %d %q, want 503 naming the unbound link", code, body)
	}
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}

func TestCancellingTheContextMakesRunReturnNilAndLeaveNoGoroutine(t *testing.T) {
	verifyNoLeaks(t)
	in := newInstance(t)
	cfg := in.config(t)
	stages, _ := parseStages(strings.Join(allStages, ","))
	r := start(t, func(ctx context.Context) error {
		return run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	})
	in.waitReady(t, r)
	began := time.Now()
	if err := r.stop(t, 15*time.Second); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
	t.Logf("run stopped %v after cancel", time.Since(began))
	// Everything it listened on is closed.
	for _, addr := range []string{in.httpAddr, in.natsAddr, in.simAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after run returned", addr)
		}
	}
}

func TestRunWithAStageSubsetStartsOnlyThose(t *testing.T) {
	verifyNoLeaks(t)
	// Only the HTTP API: no egress, so ready needs no link; no simulator either.
	in := newInstance(t, "SMSFLOW_SMSC_SIM__ENABLED=false")
	cfg := in.config(t)
	stages, err := parseStages("http")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, func(ctx context.Context) error {
		return run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	})
	in.waitReady(t, r)
	if c, err := net.DialTimeout("tcp", in.simAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the simulator listens on %s though smsc_sim.enabled is false", in.simAddr)
	}
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}

func TestRunFailsCleanlyWhenItsPortIsTaken(t *testing.T) {
	verifyNoLeaks(t)
	in := newInstance(t)
	ln, err := net.Listen("tcp", in.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := in.config(t)
	stages, _ := parseStages(strings.Join(allStages, ","))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err = run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("run = %v, want an error naming http.listen", err)
	}
	// What it started before failing (simulator, NATS) is stopped again.
	for _, addr := range []string{in.natsAddr, in.simAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after run failed", addr)
		}
	}
}

func TestSecretsNeverReachTheLog(t *testing.T) {
	const pw = "S3cr3tPW" // SMPP passwords are at most 8 characters
	for _, tc := range []struct {
		name    string
		env     []string
		waitFor string // a log line that shows the case happened
		deliver bool
	}{
		{"a message sent over a bound link logs no password",
			[]string{"SMSFLOW_LINKS__SIM1__PASSWORD=" + pw, "SMSFLOW_SMSC_SIM__PASSWORD=" + pw}, "submitted", true},
		{"a refused bind logs neither password",
			[]string{"SMSFLOW_LINKS__SIM1__PASSWORD=" + pw, "SMSFLOW_SMSC_SIM__PASSWORD=0therPW1"}, "bind refused", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstance(t, append(tc.env, "SMSFLOW_LOG__LEVEL=debug", "SMSFLOW_SMSC_SIM__RECEIPT_DELAY=20ms")...)
			var logs natstest.Buffer
			// runCommand: the whole path a user takes, config and logger included.
			r := start(t, func(ctx context.Context) error { return runCommand(ctx, nil, &logs, in.environ) })
			if tc.deliver {
				in.waitReady(t, r)
				resp, err := client.Post("http://"+in.httpAddr+"/v1/messages", "application/json",
					strings.NewReader(`{"to":"+420600000002","text":"hello"}`))
				if err != nil {
					t.Fatal(err)
				}
				var accepted struct{ ID string }
				err = json.NewDecoder(resp.Body).Decode(&accepted)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusAccepted {
					t.Fatalf("POST /v1/messages = %d, %v", resp.StatusCode, err)
				}
				in.waitDelivered(t, accepted.ID)
			}
			natstest.Eventually(t, wait, "want a log line containing "+tc.waitFor, func() bool {
				return strings.Contains(logs.String(), tc.waitFor)
			})
			if err := r.stop(t, wait); err != nil {
				t.Fatalf("run returned %v", err)
			}
			out := logs.String()
			if !strings.Contains(out, "smsflow starting") || !strings.Contains(out, "level=DEBUG") {
				t.Fatalf("the log has no debug lines, so the check below proves nothing:\n%s", out)
			}
			for _, secret := range []string{pw, "0therPW1"} {
				if strings.Contains(out, secret) {
					t.Fatalf("the log contains the password %q:\n%s", secret, out)
				}
			}
		})
	}
}

func TestABadConfigIsAnErrorNamingItsKey(t *testing.T) {
	for _, tc := range []struct {
		name, env, want string
	}{
		{"a link rate of 0 is refused", "SMSFLOW_LINKS__SIM1__RATE=0", "links.sim1.rate"},
		{"a password longer than SMPP allows is refused", "SMSFLOW_LINKS__SIM1__PASSWORD=toolongpw", "links.sim1.password"},
		{"an unknown key is refused", "SMSFLOW_NATS__LISTN=127.0.0.1:1", "nats.listn"},
		{"a bad log level is refused", "SMSFLOW_LOG__LEVEL=loud", "log.level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstance(t, tc.env)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			var stderr bytes.Buffer
			err := runCommand(ctx, nil, &stderr, in.environ)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("runCommand = %v, want an error naming %s", err, tc.want)
			}
			if errors.Is(err, errUsage) {
				t.Fatalf("runCommand = %v: a config error is not a usage error", err)
			}
			if strings.Contains(err.Error(), "toolongpw") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

func TestParseStages(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		wantErr  string
	}{
		{"all stages, as the default flag", strings.Join(allStages, ","), allStages, ""},
		{"a subset with spaces", " policy , egress ", []string{"egress", "policy"}, ""},
		{"a stage named twice counts once", "receipts,receipts", []string{"receipts"}, ""},
		{"an unknown stage is an error naming it", "policy,bogus", nil, `unknown stage "bogus"`},
		{"a stage in the wrong case is unknown", "Policy", nil, `unknown stage "Policy"`},
		{"an empty list is an error", "", nil, "no stage given"},
		{"only commas is an error", ",,", nil, "no stage given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStages(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseStages(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStages(%q): %v", tc.in, err)
			}
			if k := keys(got); strings.Join(k, ",") != strings.Join(sortedCopy(tc.want), ",") {
				t.Fatalf("parseStages(%q) = %v, want %v", tc.in, k, tc.want)
			}
		})
	}
}

func TestDispatch(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantUsage  bool   // errUsage
		wantStdout string // "" : nothing on stdout
		wantStderr string
	}{
		{"no command is a usage error", nil, true, "", "Usage:"},
		{"an unknown command is a usage error", []string{"frobnicate"}, true, "", "Usage:"},
		{"help prints the usage", []string{"help"}, false, "Usage:", ""},
		{"-h prints the usage", []string{"-h"}, false, "Usage:", ""},
		{"--help prints the usage", []string{"--help"}, false, "Usage:", ""},
		{"run with an unknown stage is a usage error", []string{"run", "--stages", "policy,bogus"}, true, "", ""},
		{"run with an unknown flag is a usage error", []string{"run", "--bogus"}, true, "", "flag provided but not defined"},
		{"run with a stray argument is a usage error, not a run of every stage", []string{"run", "policy"}, true, "", ""},
		{"smsc-sim with a stray argument is a usage error", []string{"smsc-sim", "extra"}, true, "", ""},
		{"smsc-sim with an unknown flag is a usage error", []string{"smsc-sim", "--bogus"}, true, "", "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			environ := func() []string { return nil }
			err := dispatch(context.Background(), tc.args, &stdout, &stderr, environ)
			if tc.wantUsage != errors.Is(err, errUsage) {
				t.Fatalf("dispatch(%q) = %v, want usage error: %v", tc.args, err, tc.wantUsage)
			}
			if !tc.wantUsage && err != nil {
				t.Fatalf("dispatch(%q) = %v", tc.args, err)
			}
			if tc.wantStdout == "" && stdout.Len() > 0 {
				t.Fatalf("stdout = %q, want nothing", stdout.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) {
				t.Fatalf("stdout = %q, want it to contain %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Fatalf("stderr = %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

func TestSimCommandServesUntilCancelled(t *testing.T) {
	verifyNoLeaks(t)
	addr := freeAddr(t)
	var stdout, stderr natstest.Buffer
	r := start(t, func(ctx context.Context) error {
		return simCommand(ctx, []string{"--listen", addr, "--password", "S3cr3tPW"}, &stdout, &stderr)
	})
	natstest.Eventually(t, wait, "want smsc-sim listening", func() bool {
		return strings.Contains(stdout.String(), "smsc-sim listening on "+addr)
	})
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("simCommand = %v", err)
	}
	if !strings.Contains(stdout.String(), "smsc-sim stopped") {
		t.Fatalf("stdout = %q, want the stop summary", stdout.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), "S3cr3tPW") {
		t.Fatal("smsc-sim printed its password")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func sortedCopy(s []string) []string {
	m := map[string]bool{}
	for _, v := range s {
		m[v] = true
	}
	return keys(m)
}

func TestRunStoppedDuringStartReturnsNil(t *testing.T) {
	verifyNoLeaks(t)
	in := newInstance(t)
	cfg := in.config(t)
	stages, _ := parseStages(strings.Join(allStages, ","))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // SIGTERM before run got anywhere
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v, want nil: a stop during start-up is a clean stop", err)
		}
	case <-time.After(wait):
		t.Fatalf("run did not return within %v", wait)
	}
}

// run wires the blacklist: the configured file is loaded, and the HTTP API
// adds, checks and removes numbers.
func TestRunServesTheBlacklist(t *testing.T) {
	verifyNoLeaks(t)
	list := filepath.Join(t.TempDir(), "blacklist.txt")
	if err := os.WriteFile(list, []byte("+420600000001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "SMSFLOW_SMSC_SIM__ENABLED=false", "SMSFLOW_BLACKLIST__FILES="+list)
	cfg := in.config(t)
	stages, _ := parseStages("policy,http")
	r := start(t, func(ctx context.Context) error {
		return run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	})
	in.waitReady(t, r)
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+in.httpAddr+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp.StatusCode, out
	}
	natstest.Eventually(t, wait, "the file's number blacklisted", func() bool {
		code, out := call("GET", "/v1/blacklist/+420600000001", "")
		return code == http.StatusOK && out["blacklisted"] == true && out["source"] == "list"
	})
	if code, out := call("POST", "/v1/blacklist", `{"number":"+420600000002"}`); code != http.StatusOK || out["blacklisted"] != true {
		t.Errorf("POST /v1/blacklist = %d %v, want 200 blacklisted", code, out)
	}
	if code, out := call("DELETE", "/v1/blacklist/+420600000001", ""); code != http.StatusOK || out["blacklisted"] != false {
		t.Errorf("DELETE /v1/blacklist = %d %v, want 200 not blacklisted", code, out)
	}
	if code, out := call("GET", "/v1/blacklist/+420600000002", ""); code != http.StatusOK || out["blacklisted"] != true {
		t.Errorf("GET after POST = %d %v, want 200 blacklisted", code, out)
	}
	// The policy stage follows the same list: the runtime addition is
	// rejected, the number taken off the file goes on (queued: no egress here).
	code, out := call("POST", "/v1/messages", `{"messages":[{"to":"+420600000002","text":"a"},{"to":"+420600000001","text":"b"}]}`)
	ids, _ := out["ids"].([]any)
	if code != http.StatusAccepted || len(ids) != 2 {
		t.Fatalf("POST /v1/messages = %d %v, want 202 with 2 ids", code, out)
	}
	for i, want := range []string{"rejected/blacklist", "queued/"} {
		var got string
		natstest.Eventually(t, wait, "message "+want, func() bool {
			_, m := call("GET", fmt.Sprintf("/v1/messages/%v", ids[i]), "")
			got = fmt.Sprintf("%v/%v", m["status"], m["reason"])
			if m["reason"] == nil {
				got = fmt.Sprintf("%v/", m["status"])
			}
			return got == want
		})
	}
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}

// A blacklist file with a bad line stops run at start, naming the file and
// the line, rather than running without its numbers.
func TestRunRefusesABadBlacklistFile(t *testing.T) {
	verifyNoLeaks(t)
	list := filepath.Join(t.TempDir(), "blacklist.txt")
	if err := os.WriteFile(list, []byte("+420600000001\nnot a number\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "SMSFLOW_SMSC_SIM__ENABLED=false", "SMSFLOW_BLACKLIST__FILES="+list)
	cfg := in.config(t)
	stages, _ := parseStages("policy,http")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), list) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("run = %v, want an error naming %s line 2", err, list)
	}
}
