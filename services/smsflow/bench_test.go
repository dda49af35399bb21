package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// A small bench through the real pipeline: every message delivered once,
// the simulator saw each once, and the report adds up, on both lanes:
// marketing (the pool's bulk lane) and transactional (its priority lane).
func TestBenchDeliversEveryMessageAndReportsIt(t *testing.T) {
	for _, kind := range []string{"marketing", "transactional"} {
		t.Run(kind, func(t *testing.T) { benchDeliversEveryMessage(t, kind) })
	}
}

func benchDeliversEveryMessage(t *testing.T, kind string) {
	r := benchJSON(t, 300, "--links", "2", "--rate", "2000", "--parts", "2", "--raw-messages", "500", "--kind", kind)
	if r.Kind != kind {
		t.Errorf("kind %q in the result, want %q", r.Kind, kind)
	}
	submits := 0
	for _, l := range r.PerLink {
		submits += l.Submits
		if l.Rate != 2000 {
			t.Errorf("link %s: configured rate %d, want 2000", l.Name, l.Rate)
		}
	}
	if len(r.PerLink) != 2 || submits != 600 {
		t.Errorf("%d links with %d submits in all, want 2 links and 600 submits (300 messages of 2 parts)", len(r.PerLink), submits)
	}
	if r.LatencySubmitted.N != 300 || r.LatencyDelivered.N != 300 || r.LatencySubmitted.P50 > r.LatencySubmitted.P99 {
		t.Errorf("latencies %+v / %+v: want 300 samples each, p50 ≤ p99", r.LatencySubmitted, r.LatencyDelivered)
	}
	if r.RawPublishPerSec <= 0 || r.Ratio <= 0 || r.PeakRSSMB <= 0 || r.CPUSecPer1000 <= 0 {
		t.Errorf("raw %v, ratio %v, peak RSS %v, CPU %v: want all measured", r.RawPublishPerSec, r.Ratio, r.PeakRSSMB, r.CPUSecPer1000)
	}
}

func TestBenchFlagsAreChecked(t *testing.T) {
	for _, args := range [][]string{{"--messages", "0"}, {"--parts", "11"}, {"--links", "0"}, {"--send-rate", "-1"}, {"--kind", "otp"}, {"--stages", "policy,nope"}, {"extra"}} {
		if _, err := parseBench(args, io.Discard); err == nil {
			t.Errorf("parseBench(%q) accepted", args)
		}
	}
}

func TestPercentiles(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(100 - i) // 100..1, unsorted
	}
	p := percentiles(v)
	if p.P50 != 51 || p.P90 != 91 || p.P99 != 100 || p.N != 100 {
		t.Errorf("percentiles = %+v, want p50 51, p90 91, p99 100, n 100", p)
	}
	if got := percentiles(nil); got != (Percentiles{}) {
		t.Errorf("percentiles(nil) = %+v", got)
	}
}

func TestBenchFillMakesExactlyTheParts(t *testing.T) {
	for parts := 1; parts <= 4; parts++ {
		s := benchFill("bench 7 ", parts)
		limit := 160
		if parts > 1 {
			limit = 153 * parts
		}
		if len(s) > limit || (parts > 1 && len(s) <= 153*(parts-1)) || strings.ContainsFunc(s, func(r rune) bool { return r > 'z' }) {
			t.Errorf("benchFill(%d) is %d characters: not exactly %d GSM part(s)", parts, len(s), parts)
		}
	}
}

// A --pause run against an external server with its monitoring port: the
// backlog drains after the links resume (every message delivered once), and
// the report has the pipeline's and the server's memory apart.
func TestBenchPauseAgainstAnExternalServerReportsBothMemories(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready after 10s")
	}
	r := benchJSON(t, 200, "--pause", "--campaign", "bench-test", "--raw-messages", "100",
		"--nats-url", s.ClientURL(), "--nats-monitor", "http://"+s.MonitorAddr().String())
	if r.EmbeddedNATS {
		t.Error("embedded_nats is true with --nats-url")
	}
	if r.PausedRSSMB <= 0 || r.StartRSSMB <= 0 || r.PausedHeapMB <= 0 || r.ServerPausedRSSMB <= 0 || r.ServerPeakRSSMB < r.ServerPausedRSSMB {
		t.Errorf("paused RSS %v, start RSS %v, paused heap %v, server paused %v, server peak %v: want all measured, peak ≥ paused",
			r.PausedRSSMB, r.StartRSSMB, r.PausedHeapMB, r.ServerPausedRSSMB, r.ServerPeakRSSMB)
	}
}

func TestBenchNATSMonitorNeedsAnExternalServer(t *testing.T) {
	if _, err := parseBench([]string{"--nats-monitor", "http://127.0.0.1:8222"}, io.Discard); err == nil {
		t.Error("--nats-monitor without --nats-url accepted")
	}
}

// The table says whose memory its RSS is.
func TestBenchTableSaysWhoseRSS(t *testing.T) {
	for _, c := range []struct {
		r    BenchResult
		want []string
	}{
		{BenchResult{EmbeddedNATS: true, PeakRSSMB: 500, PausedRSSMB: 400, StartRSSMB: 100, Messages: 1 << 20},
			[]string{"peak RSS (pipeline + embedded NATS)  500 MB", "RSS with all queued (pipeline + embedded NATS)  400 MB (100 MB before sending: 300 bytes per queued message)"}},
		{BenchResult{PeakRSSMB: 50, ServerPeakRSSMB: 900, ServerPausedRSSMB: 800},
			[]string{"peak RSS (pipeline, NATS server external)  50 MB", "NATS server RSS (/varz)  peak 900 MB, all queued 800 MB"}},
	} {
		var out bytes.Buffer
		printBench(&out, c.r)
		table := strings.Join(strings.Fields(out.String()), " ") // tabwriter's padding aside
		for _, w := range c.want {
			if !strings.Contains(table, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("table lacks %q:\n%s", w, out.String())
			}
		}
	}
}

// benchJSON runs `smsflow bench --messages n --json` with args and checks
// that every message was delivered exactly once.
func benchJSON(t *testing.T, n int, args ...string) BenchResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	args = append([]string{"--messages", strconv.Itoa(n), "--stall", "20s", "--json"}, args...)
	if err := benchCommand(ctx, args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var r BenchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if r.Lost != 0 || r.DoubleFinal != 0 || r.Duplicates != 0 || r.Statuses["delivered"] != n {
		t.Errorf("lost %d, double final %d, duplicates %d, final statuses %v; want 0, 0, 0, %d delivered", r.Lost, r.DoubleFinal, r.Duplicates, r.Statuses, n)
	}
	return r
}
