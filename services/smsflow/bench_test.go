package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := benchCommand(ctx, []string{"--messages", "300", "--links", "2", "--rate", "2000", "--parts", "2",
		"--raw-messages", "500", "--stall", "20s", "--json", "--kind", kind}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var r BenchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if r.Kind != kind {
		t.Errorf("kind %q in the result, want %q", r.Kind, kind)
	}
	if r.Lost != 0 || r.DoubleFinal != 0 || r.Duplicates != 0 || r.Statuses["delivered"] != 300 {
		t.Errorf("lost %d, double final %d, duplicates %d, final statuses %v; want 0, 0, 0, 300 delivered", r.Lost, r.DoubleFinal, r.Duplicates, r.Statuses)
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
