package policy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/blacklist"
	"github.com/smsflow/smsflow/pkg/caps"
	"github.com/smsflow/smsflow/pkg/dedup"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// numberSet is an in-memory blacklist in a Go map.
type numberSet map[string]struct{}

func (s numberSet) Contains(n string) bool { _, ok := s[n]; return ok }

// loadBlacklist is the production blacklist (pkg/blacklist) loaded from a
// list file of 1,000,000 numbers (+420700000000 to +420700999999).
func loadBlacklist(b *testing.B, nc *nats.Conn, js jetstream.JetStream) *blacklist.List {
	path := filepath.Join(b.TempDir(), "blacklist.txt")
	var buf bytes.Buffer
	for i := range 1_000_000 {
		fmt.Fprintf(&buf, "+420700%06d\n", i)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	l := blacklist.New(nc, js, blacklist.Options{Files: []string{path}, PollInterval: time.Minute,
		KVBucket: streams.BucketBlacklist, Subject: "-"}, slog.New(slog.DiscardHandler), blacklist.NewMetrics(prometheus.NewRegistry()))
	natstest.Run(b, wait, l.Run)
	select {
	case <-l.Ready():
	case <-time.After(time.Minute):
		b.Fatal("blacklist not loaded within a minute")
	}
	if !l.Contains("+420700999999") || l.Contains("+420600000000") {
		b.Fatal("the blacklist does not hold what the file says")
	}
	return l
}

// BenchmarkStage measures one policy stage, alone on an embedded server, with
// every rule on: a 1,000,000-number blacklist (pkg/blacklist, from a file), opt-out view,
// duplicate window and caps (3 a day, 10 a week). The messages (b.N of them,
// to b.N/2 numbers, unique texts) are in SMS_OUTBOUND before the clock
// starts; it stops when the consumer has acked the last. Reported as msgs/s.
//
//	go test -run '^$' -bench BenchmarkStage -benchtime 20000x -count 5 ./services/policy/
func BenchmarkStage(b *testing.B) {
	srv := natstest.RunServer(b, b.TempDir())
	nc, js := natstest.Connect(b, srv)
	ctx := context.Background()
	if err := streams.Apply(ctx, js, []string{"default", "cz"}); err != nil {
		b.Fatal(err)
	}
	var black rules.Blacklist
	if os.Getenv("TEST_BENCH_MAP_BLACKLIST") != "" {
		// A Go map of strings, as the bench had before: a million pointers
		// for the GC to scan in every cycle (the comparison).
		m := make(numberSet, 1_000_000)
		for i := range 1_000_000 {
			m[fmt.Sprintf("+420700%06d", i)] = struct{}{}
		}
		black = m
	} else {
		black = loadBlacklist(b, nc, js)
	}
	msgs := make([]map[string]any, b.N)
	for i := range msgs {
		msgs[i] = map[string]any{"id": fmt.Sprintf("bench-%07d", i), "to": fmt.Sprintf("+420600%06d", i/2),
			"text": fmt.Sprintf("offer %d", i), "kind": "marketing"}
	}
	publishAll(b, js, msgs)

	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	kv := func(name string) jetstream.KeyValue {
		k, err := js.KeyValue(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		return k
	}
	w, _ := caps.NewWindow("UTC")
	log := slog.New(slog.DiscardHandler)
	view := optout.NewView(kv(streams.BucketOptOut), log)
	natstest.Run(b, wait, view.Run)
	<-view.Ready()
	r := newRulesFor(black, view, dedup.New(kv(streams.BucketDedup), 10*time.Minute).WriteVia(nc),
		caps.NewCounter(kv(streams.BucketCaps), w, caps.Limits{Daily: 3, Weekly: 10}).WriteVia(nc))
	check := Chain(czRoutes(), Rules(r))
	if os.Getenv("TEST_BENCH_NO_RULES") != "" {
		check = Chain(czRoutes()) // the stage without the rules, for comparison
	}
	s := New(js, pub, check, testOptions(), log, NewMetrics(prometheus.NewRegistry()))

	b.ResetTimer()
	stopProfile := profile(b)
	cpu0 := cpuTime(b)
	start := time.Now()
	stop := natstest.Run(b, 10*time.Minute, s.Run)
	waitDrained(b, js, 10*time.Minute)
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	stopProfile()
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	// CPU per message (client and embedded server together) does not depend
	// on what else the machine runs, as msgs/s does.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
}

// profile writes a CPU profile of the timed part alone (not the setup,
// which builds the blacklist) to $TEST_BENCH_CPUPROFILE when it is set:
//
//	TEST_BENCH_CPUPROFILE=/tmp/cpu.out go test -run '^$' -bench BenchmarkStage -benchtime 20000x -count 1 ./services/policy/
func profile(b *testing.B) (stop func()) {
	path := os.Getenv("TEST_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
