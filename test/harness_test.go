// Package test holds the end-to-end, restart and fault tests: they build the
// smsflow binary, run it as a subprocess against the SMSC simulator over TCP,
// and watch the result the way a user would, on NATS and over HTTP.
package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
)

var binary string // built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "smsflow-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "smsflow")
	build := exec.Command("go", "build", "-o", binary, "../services/smsflow")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building smsflow:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// pipeline is one smsflow process.
type pipeline struct {
	t        *testing.T
	cfgPath  string
	natsURL  string
	httpAddr string
	env      []string // extra SMSFLOW_ variables over the config file
	stages   string   // --stages; "" runs every stage
	cmd      *exec.Cmd
	logs     *natstest.Buffer
	exited   chan error
}

// setup writes a config for a pipeline with one link to simAddr, its data
// in dataDir, and returns it unstarted.
func setup(t *testing.T, dataDir, simAddr string, extra string) *pipeline {
	t.Helper()
	natsPort, httpPort := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`
[nats]
listen = "127.0.0.1:%d"
data_dir = %q
[http]
listen = "127.0.0.1:%d"
[smsc_sim]
enabled = false
[links.l1]
address = %q
system_id = "e2e"
password = "pw-e2e"
rate = 500
burst = 50
window = 10
resp_timeout = "5s"
[pools.default]
links = ["l1"]
[egress]
backoff_min = "100ms"
backoff_max = "2s"
shutdown_grace = "10s"
[log]
level = "debug"
%s
`, natsPort, dataDir, httpPort, simAddr, extra)
	path := filepath.Join(t.TempDir(), "smsflow.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &pipeline{t: t, cfgPath: path, natsURL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort), httpAddr: fmt.Sprintf("127.0.0.1:%d", httpPort)}
}

// start runs the binary and waits (bounded) until /readyz answers 200, or,
// when stages leave out http (nothing serves /readyz), until it logs that it
// is running: its links may still be binding then.
func (p *pipeline) start() {
	t := p.t
	t.Helper()
	p.logs = &natstest.Buffer{}
	args := []string{"run", "--config", p.cfgPath}
	if p.stages != "" {
		args = append(args, "--stages", p.stages)
	}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.Env = append(append(os.Environ(), "SMSFLOW_LOG__FORMAT=text"), p.env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan error, 1)
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("smsflow logs (last 4 KiB):\n%s", p.logs.Tail(4096))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if p.stages != "" && !strings.Contains(p.stages, "http") {
			if strings.Contains(p.logs.String(), `msg="smsflow running"`) {
				return
			}
		} else if resp, err := http.Get("http://" + p.httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-p.exited:
			t.Fatalf("smsflow exited before it was ready: %v\n%s", err, p.logs.Tail(4096))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("smsflow not ready after 60s\n%s", p.logs.Tail(4096))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (p *pipeline) stop() {
	t := p.t
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("smsflow exited with %v after SIGTERM\n%s", err, p.logs.Tail(4096))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("smsflow still running 60s after SIGTERM\n%s", p.logs.Tail(4096))
	}
}

func (p *pipeline) connect() (*nats.Conn, jetstream.JetStream) {
	p.t.Helper()
	nc, err := nats.Connect(p.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		p.t.Fatal(err)
	}
	return nc, js
}

// postJSON posts v to path and returns the status code and body.
func (p *pipeline) postJSON(path string, v any) (int, []byte) {
	p.t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := http.Post("http://"+p.httpAddr+path, "application/json", bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

// statusLog collects every event on sms.status.> from the stream, from the
// start, with an ordered consumer: what a user sees with `nats sub`.
type statusLog struct {
	mu     sync.Mutex
	events map[string][]status.Event
	cc     jetstream.ConsumeContext
}

func watchStatuses(t *testing.T, js jetstream.JetStream) *statusLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c jetstream.Consumer
	var err error
	for { // the stream appears when the pipeline has applied its definitions
		c, err = js.OrderedConsumer(ctx, "SMS_STATUS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"sms.status.>"}})
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("status consumer: %v", err)
	}
	l := &statusLog{events: map[string][]status.Event{}}
	cc, err := c.Consume(func(m jetstream.Msg) {
		var ev status.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Errorf("bad status event %q: %v", m.Data(), err)
			return
		}
		l.mu.Lock()
		l.events[ev.ID] = append(l.events[ev.ID], ev)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	l.cc = cc
	t.Cleanup(cc.Stop)
	return l
}

// terminal returns every terminal event per message id.
func (l *statusLog) terminal() map[string][]status.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]status.Event{}
	for id, evs := range l.events {
		for _, ev := range evs {
			if status.Terminal(ev.Status) {
				out[id] = append(out[id], ev)
			}
		}
	}
	return out
}

// waitTerminal waits until every id in ids has a terminal status.
func (l *statusLog) waitTerminal(t *testing.T, d time.Duration, ids []string) map[string][]status.Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		term := l.terminal()
		missing := 0
		var example string
		for _, id := range ids {
			if len(term[id]) == 0 {
				missing++
				example = id
			}
		}
		if missing == 0 {
			return term
		}
		if time.Now().After(deadline) {
			l.mu.Lock()
			ex := l.events[example]
			l.mu.Unlock()
			t.Fatalf("after %v: %d of %d messages have no terminal status; e.g. %s with history %+v", d, missing, len(ids), example, ex)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
