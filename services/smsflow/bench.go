package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/schollz/progressbar/v3"
	xrate "golang.org/x/time/rate"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// benchOptions are the flags of `smsflow bench`.
type benchOptions struct {
	messages, links, rate, parts, instances, window int
	receipts, json, pause                           bool
	natsURL, dataDir, cpuProfile, memProfile        string
	kind, stages                                    string
	natsMonitor, campaign                           string
	stall                                           time.Duration
	rawMessages                                     int
	sendRate                                        float64
}

func parseBench(args []string, stderr io.Writer) (benchOptions, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchOptions
	fs.IntVar(&o.messages, "messages", 10000, "messages to send")
	fs.IntVar(&o.links, "links", 1, "SMPP links, each to its own simulator")
	fs.IntVar(&o.rate, "rate", 100000, "rate of each link, submits per second (the default does not bind)")
	fs.IntVar(&o.parts, "parts", 1, "SMS parts per message (1-10)")
	fs.BoolVar(&o.receipts, "receipts", true, "simulator sends delivery receipts; without, a message is done when submitted")
	fs.IntVar(&o.instances, "instances", 1, "pipeline instances in this process (policy, egress, receipts each)")
	// A worker holds its window slot from the submit until the submit is
	// recorded (the submitted status and the receipt index), so that a crash
	// can double no more than the window; against the instant simulator those
	// JetStream round trips, not the CPU, are what a window of 10 waits on.
	fs.IntVar(&o.window, "window", 10, "submits in flight per link and instance; each holds its worker until the submit is recorded, so against the instant simulator a window of 10 caps throughput near 3,000/s: use 100-200 to find the CPU's ceiling")
	fs.StringVar(&o.natsURL, "nats-url", "", "external NATS server; empty: embedded, on --data-dir")
	fs.StringVar(&o.natsMonitor, "nats-monitor", "", "with --nats-url: the server's monitoring address (http://host:port, nats-server -m) to report its RSS from /varz")
	fs.StringVar(&o.dataDir, "data-dir", "", "embedded server's store; empty: a temporary directory, removed after")
	fs.BoolVar(&o.json, "json", false, "write the results as JSON instead of a table")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the load phase to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile to this file: with --pause when all is queued, else at the end")
	fs.DurationVar(&o.stall, "stall", 30*time.Second, "give up when no message finishes for this long; the rest count as lost")
	fs.StringVar(&o.campaign, "campaign", "", "put every message in this campaign (the status indexer then keeps its counters; empty: none)")
	fs.BoolVar(&o.pause, "pause", false, "pause the links, queue every message, report RSS, then resume (memory test)")
	fs.Float64Var(&o.sendRate, "send-rate", 0, "publish at most this many messages per second (0: as fast as possible, a burst)")
	fs.IntVar(&o.rawMessages, "raw-messages", 0, "messages of the raw JetStream publish loop (0: min(messages, 50000))")
	fs.StringVar(&o.kind, "kind", "marketing", "kind of every message: marketing (the pool's bulk lane) or transactional (its priority lane)")
	fs.StringVar(&o.stages, "stages", "policy,egress,receipts", "stages each instance runs, as run's --stages (status,webhooks,http add the indexer, webhooks and dashboard observer)")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: bench takes no arguments, got %q", errUsage, fs.Args())
	}
	switch {
	case o.messages < 1 || o.messages > 99_999_999:
		return o, fmt.Errorf("%w: --messages must be 1..99999999", errUsage)
	case o.links < 1 || o.links > 100:
		return o, fmt.Errorf("%w: --links must be 1..100", errUsage)
	case o.rate < 1:
		return o, fmt.Errorf("%w: --rate must be at least 1", errUsage)
	case o.parts < 1 || o.parts > 10:
		return o, fmt.Errorf("%w: --parts must be 1..10", errUsage)
	case o.instances < 1 || o.instances > 16:
		return o, fmt.Errorf("%w: --instances must be 1..16", errUsage)
	case o.sendRate < 0:
		return o, fmt.Errorf("%w: --send-rate must be ≥ 0", errUsage)
	case o.window < 1:
		return o, fmt.Errorf("%w: --window must be at least 1", errUsage)
	case o.kind != "marketing" && o.kind != "transactional":
		return o, fmt.Errorf("%w: --kind must be marketing or transactional", errUsage)
	case o.natsMonitor != "" && o.natsURL == "":
		return o, fmt.Errorf("%w: --nats-monitor is for an external server (--nats-url); the embedded one is in this process's RSS", errUsage)
	}
	if _, err := parseStages(o.stages); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if o.rawMessages == 0 {
		o.rawMessages = min(o.messages, 50000)
	}
	return o, nil
}

// BenchResult is what `smsflow bench` measured; --json writes it as is.
type BenchResult struct {
	Messages  int    `json:"messages"`
	Links     int    `json:"links"`
	Parts     int    `json:"parts"`
	Instances int    `json:"instances"`
	Receipts  bool   `json:"receipts"`
	Kind      string `json:"kind"` // of every message: marketing or transactional

	AcceptedPerSec  float64 `json:"accepted_per_sec"`  // messages into SMS_OUTBOUND per second
	SubmittedPerSec float64 `json:"submitted_per_sec"` // first accepted → last submitted
	DeliveredPerSec float64 `json:"delivered_per_sec"` // first accepted → last delivered (0 without receipts)
	Elapsed         float64 `json:"elapsed_sec"`

	LatencySubmitted Percentiles `json:"latency_accepted_to_submitted_ms"`
	LatencyDelivered Percentiles `json:"latency_accepted_to_delivered_ms"`

	PerLink []LinkResult `json:"links_detail"`

	Throttles        int            `json:"throttles"`         // ESME_RTHROTTLED answers, all simulators
	Retries          int            `json:"retries"`           // smsflow_egress_retries_total
	DuplicatesRisked int            `json:"duplicates_risked"` // smsflow_egress_duplicates_risked_total
	Duplicates       int            `json:"duplicates"`        // messages a simulator accepted more than once
	Lost             int            `json:"lost"`              // messages with no final status
	DoubleFinal      int            `json:"double_final"`      // messages with more than one terminal event
	Statuses         map[string]int `json:"final_statuses"`

	// Memory. This process holds the pipeline, the simulators, the bench's
	// tracker (32 bytes a message) and, unless --nats-url, the NATS server.
	EmbeddedNATS  bool    `json:"embedded_nats"`
	CPUSecPer1000 float64 `json:"cpu_sec_per_1000"` // whole process: pipeline, NATS server (embedded), simulators, load
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	PausedRSSMB   float64 `json:"paused_rss_mb,omitempty"` // with --pause: RSS with every message queued
	// With --pause: RSS just before the first message was sent, and the Go
	// heap in use after a collection with every message queued (RSS less the
	// collector's headroom and memory not yet returned to the OS).
	StartRSSMB   float64 `json:"start_rss_mb,omitempty"`
	PausedHeapMB float64 `json:"paused_heap_mb,omitempty"`
	// With --nats-monitor: the external server's RSS (/varz mem), sampled
	// every half second, and with every message queued.
	ServerPeakRSSMB   float64 `json:"server_peak_rss_mb,omitempty"`
	ServerPausedRSSMB float64 `json:"server_paused_rss_mb,omitempty"`

	RawPublishPerSec float64 `json:"raw_publish_per_sec"` // JetStream file-storage publish loop, same size
	Ratio            float64 `json:"pipeline_to_raw"`     // submitted_per_sec / raw_publish_per_sec
	MessageBytes     int     `json:"message_bytes"`
}

// Percentiles are latencies in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	N   int     `json:"n"`
}

// LinkResult is one link as its simulator saw it.
type LinkResult struct {
	Name        string  `json:"name"`
	Rate        int     `json:"configured_rate"`
	Achieved    float64 `json:"achieved_rate"`
	MaxInSecond int     `json:"max_in_1000ms"`
	Submits     int     `json:"submits"`
	Throttled   int     `json:"throttled"`
}

func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseBench(args, stderr)
	if err != nil {
		return err
	}
	res, err := runBench(ctx, o, stderr)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printBench(stdout, res)
	return nil
}

// bench is one run: the simulators, the pipeline instances and the tracker.
type bench struct {
	o      benchOptions
	runID  string
	sims   []*smscsim.Server
	names  []string
	regs   []*prometheus.Registry
	track  *tracker
	stderr io.Writer
}

func runBench(ctx context.Context, o benchOptions, stderr io.Writer) (res BenchResult, err error) {
	b := &bench{o: o, runID: strings.ToLower(rand.Text()[:8]), stderr: stderr}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for i := range o.links {
		sim, err := smscsim.Start(smscsim.Options{SystemID: "bench", Password: "bench", NoReceipts: !o.receipts})
		if err != nil {
			return res, err
		}
		defer sim.Close()
		b.sims = append(b.sims, sim)
		b.names = append(b.names, fmt.Sprintf("bench%d", i+1))
	}
	if o.dataDir == "" && o.natsURL == "" {
		dir, err := os.MkdirTemp("", "smsflow-bench")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		b.o.dataDir = dir
	}
	cfg, natsURL, err := b.config()
	if err != nil {
		return res, err
	}

	// The pipeline: every instance is run(), the one composition root; the
	// first hosts the embedded server unless --nats-url is given, so it
	// stops last.
	type instance struct {
		cancel context.CancelFunc
		done   chan error
	}
	var insts []instance
	defer func() {
		for i := len(insts) - 1; i >= 0; i-- {
			insts[i].cancel()
			if rerr := <-insts[i].done; rerr != nil {
				err = errors.Join(err, fmt.Errorf("instance %d: %w", i, rerr))
			}
		}
	}()
	stages, _ := parseStages(o.stages) // checked by parseBench
	for i := range o.instances {
		c := cfg
		if i > 0 && o.natsURL == "" {
			c.NATS.URL = natsURL
		}
		reg := prometheus.NewRegistry()
		b.regs = append(b.regs, reg)
		ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		go func() { done <- run(ictx, c, stages, log.With("instance", i), reg) }()
		insts = append(insts, instance{cancel, done})
		if i == 0 && o.natsURL == "" {
			if err := waitListening(ctx, cfg.NATS.Listen, done); err != nil {
				return res, err
			}
		}
	}

	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		return res, fmt.Errorf("bench: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return res, err
	}
	if err := b.waitReady(ctx, js); err != nil {
		return res, err
	}
	body := b.envelope(0)
	res.MessageBytes = len(body)
	fmt.Fprintf(stderr, "bench: raw JetStream publish loop, %d messages of %d bytes\n", o.rawMessages, len(body))
	if res.RawPublishPerSec, err = rawPublish(ctx, js, o.rawMessages, len(body)); err != nil {
		return res, err
	}

	b.track = newTracker(b.runID, o.messages, o.receipts)
	if err := b.track.watch(ctx, js); err != nil {
		return res, err
	}
	defer b.track.stop()

	if o.pause {
		if err := b.pauseLinks(ctx, js, true); err != nil {
			return res, err
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
		defer pprof.StopCPUProfile()
	}
	var server *serverMem
	if o.natsMonitor != "" {
		server = watchServerMem(ctx, o.natsMonitor)
		defer server.stop()
	}
	res.StartRSSMB = currentRSSMB()
	cpu0 := cpuSeconds()
	start := time.Now()
	if err := b.send(ctx, js); err != nil {
		return res, err
	}
	if o.pause {
		if res.PausedRSSMB, err = b.waitQueued(ctx); err != nil {
			return res, err
		}
		res.PausedHeapMB = heapInUseMB()
		if server != nil {
			res.ServerPausedRSSMB = server.current()
		}
		if err := writeHeapProfile(o.memProfile); err != nil {
			return res, err
		}
		if err := b.pauseLinks(ctx, js, false); err != nil {
			return res, err
		}
	}
	if err := b.waitDone(ctx); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	if !o.pause {
		if err := writeHeapProfile(o.memProfile); err != nil {
			return res, err
		}
	}
	b.fill(&res, cpu)
	if server != nil {
		res.ServerPeakRSSMB = server.stop()
	}
	if !o.pause {
		res.StartRSSMB = 0 // only a --pause run says what the queue costs
	}
	return res, nil
}

// config builds the pipeline's config from the embedded defaults and the flags.
func (b *bench) config() (config.Config, string, error) {
	cfg, err := config.Load("", func() []string { return nil })
	if err != nil {
		return cfg, "", err
	}
	cfg.SMSCSim.Enabled = false
	cfg.Log.Level = "warn"
	cfg.Links = map[string]config.Link{}
	for i, sim := range b.sims {
		cfg.Links[b.names[i]] = config.Link{Address: sim.Addr(), SystemID: "bench", Password: "bench",
			Rate: b.o.rate, Burst: b.o.rate, Window: b.o.window, RespTimeout: 5 * time.Second, SourceAddr: "bench"}
	}
	cfg.Pools = map[string]config.Pool{"default": {Links: b.names}}
	cfg.Policy.DefaultPool = "default"
	cfg.HTTP.Listen = "127.0.0.1:0"
	url := b.o.natsURL
	if url != "" {
		cfg.NATS.URL = url
	} else {
		port, err := freePort()
		if err != nil {
			return cfg, "", err
		}
		cfg.NATS.Listen = "127.0.0.1:" + strconv.Itoa(port)
		cfg.NATS.DataDir = b.o.dataDir
		url = "nats://" + cfg.NATS.Listen
	}
	if err := cfg.Validate(); err != nil {
		return cfg, "", fmt.Errorf("bench config: %w", err)
	}
	return cfg, url, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitListening waits until the embedded server accepts connections, or
// the instance fails.
func waitListening(ctx context.Context, addr string, done chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-done:
			done <- err // the deferred shutdown reads it again
			return fmt.Errorf("bench: pipeline stopped while starting: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: nats on %s not listening after 60s", addr)
		}
	}
}

// waitReady waits for the streams and for every instance's bind on every link.
func (b *bench) waitReady(ctx context.Context, js jetstream.JetStream) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ready := true
		for _, s := range []string{streams.Outbound, streams.Status, streams.Egress} {
			if _, err := js.Stream(ctx, s); err != nil {
				ready = false
			}
		}
		for _, sim := range b.sims {
			if sim.Binds() < b.o.instances {
				ready = false
			}
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("bench: pipeline not ready after 60s (streams or binds missing)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// id and destination of message n: a destination per message, so a
// simulator's count per destination shows duplicates.
func (b *bench) id(n int) string    { return "bench-" + b.runID + "-" + strconv.Itoa(n) }
func benchDest(n int) string        { return fmt.Sprintf("+4206%08d", n) }
func benchText(n, parts int) string { return benchFill(fmt.Sprintf("bench %d ", n), parts) }
func (b *bench) envelope(n int) []byte {
	m := map[string]string{"id": b.id(n), "to": benchDest(n), "text": benchText(n, b.o.parts), "kind": b.o.kind}
	if b.o.campaign != "" {
		m["campaign"] = b.o.campaign
	}
	data, _ := json.Marshal(m)
	return data
}

// benchFill pads s with GSM 7-bit letters to exactly parts SMS: 160
// characters for one, 153 a part when concatenated.
func benchFill(s string, parts int) string {
	size := 150
	if parts > 1 {
		size = 153*parts - 5
	}
	var sb strings.Builder
	sb.WriteString(s)
	for sb.Len() < size {
		sb.WriteByte(byte('a' + sb.Len()%26))
	}
	return sb.String()
}

// send publishes every message to sms.outbound, asynchronously with a
// bounded number pending, with a progress bar.
func (b *bench) send(ctx context.Context, js jetstream.JetStream) error {
	bar := b.bar(b.o.messages, "published")
	defer bar.Finish()
	var lim *xrate.Limiter
	if b.o.sendRate > 0 {
		lim = xrate.NewLimiter(xrate.Limit(b.o.sendRate), max(1, int(b.o.sendRate/100)))
	}
	for n := range b.o.messages {
		if lim != nil {
			if err := lim.Wait(ctx); err != nil {
				return err
			}
		}
		msg := &nats.Msg{Subject: "sms.outbound", Data: b.envelope(n)}
		if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(b.id(n)), jetstream.WithStallWait(time.Minute)); err != nil {
			return fmt.Errorf("bench: publish: %w", err)
		}
		if n%1000 == 999 {
			_ = bar.Set(n + 1)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return errors.New("bench: publishes not acknowledged after a minute")
	}
	_ = bar.Set(b.o.messages)
	return nil
}

func (b *bench) bar(n int, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(int64(n), progressbar.OptionSetWriter(b.stderr), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("msg"),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.stderr) }))
}

// pauseLinks pauses or resumes every link through KV sms_links, as an
// operator would.
func (b *bench) pauseLinks(ctx context.Context, js jetstream.JetStream, paused bool) error {
	kv, err := js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		return err
	}
	for _, name := range b.names {
		if err := linkstate.SetPaused(ctx, kv, name, paused, "bench"); err != nil {
			return err
		}
	}
	return nil
}

// waitQueued waits until every message is queued behind the paused links,
// lets the process settle, and returns its resident memory in MB.
func (b *bench) waitQueued(ctx context.Context) (float64, error) {
	bar := b.bar(b.o.messages, "queued")
	if err := b.track.wait(ctx, bar, b.o.stall, func(s *trackState) int { return s.queued }); err != nil {
		return 0, err
	}
	time.Sleep(2 * time.Second)
	return currentRSSMB(), nil
}

// waitDone waits until every message is done or nothing moves for --stall.
func (b *bench) waitDone(ctx context.Context) error {
	what := "delivered"
	if !b.o.receipts {
		what = "submitted"
	}
	bar := b.bar(b.o.messages, what)
	err := b.track.wait(ctx, bar, b.o.stall, func(s *trackState) int { return s.done })
	if errors.Is(err, errStalled) {
		fmt.Fprintf(b.stderr, "bench: no progress for %v; counting the rest as lost\n", b.o.stall)
		return nil
	}
	return err
}

// fill computes the results from the tracker, the simulators and the metrics.
func (b *bench) fill(res *BenchResult, cpu float64) {
	o := b.o
	res.Messages, res.Links, res.Parts, res.Instances, res.Receipts = o.messages, o.links, o.parts, o.instances, o.receipts
	res.Kind = o.kind
	res.EmbeddedNATS = o.natsURL == ""
	s := b.track.snapshot()
	res.Statuses = s.final
	res.Lost = o.messages - s.done
	res.DoubleFinal = s.doubleFinal
	var firstAcc, lastAcc, lastSub, lastDel int64
	var subLat, delLat []float64
	for _, m := range s.msgs {
		if m.accepted == 0 {
			continue
		}
		if firstAcc == 0 || m.accepted < firstAcc {
			firstAcc = m.accepted
		}
		lastAcc = max(lastAcc, m.accepted)
		if m.submitted != 0 {
			lastSub = max(lastSub, m.submitted)
			subLat = append(subLat, ms(m.submitted-m.accepted))
		}
		if m.delivered != 0 {
			lastDel = max(lastDel, m.delivered)
			delLat = append(delLat, ms(m.delivered-m.accepted))
		}
	}
	res.AcceptedPerSec = rate(s.accepted, time.Unix(0, firstAcc), time.Unix(0, lastAcc))
	res.SubmittedPerSec = rate(len(subLat), time.Unix(0, firstAcc), time.Unix(0, lastSub))
	res.DeliveredPerSec = rate(len(delLat), time.Unix(0, firstAcc), time.Unix(0, lastDel))
	res.LatencySubmitted = percentiles(subLat)
	res.LatencyDelivered = percentiles(delLat)
	for i, sim := range b.sims {
		subs := sim.Submits()
		lr := LinkResult{Name: b.names[i], Rate: o.rate, Submits: len(subs), MaxInSecond: sim.MaxInWindow(time.Second), Throttled: sim.Throttled()}
		if len(subs) > 1 {
			lr.Achieved = rate(len(subs)-1, subs[0].At, subs[len(subs)-1].At)
		}
		res.PerLink = append(res.PerLink, lr)
		res.Throttles += lr.Throttled
		perDest := map[string]int{}
		for _, sub := range subs {
			perDest[sub.Dest]++
		}
		for _, c := range perDest {
			if c > o.parts {
				res.Duplicates++
			}
		}
	}
	for _, reg := range b.regs {
		res.Retries += int(counterSum(reg, "smsflow_egress_retries_total"))
		res.DuplicatesRisked += int(counterSum(reg, "smsflow_egress_duplicates_risked_total"))
	}
	res.CPUSecPer1000 = cpu / float64(o.messages) * 1000
	res.PeakRSSMB = peakRSSMB()
	if res.RawPublishPerSec > 0 {
		res.Ratio = res.SubmittedPerSec / res.RawPublishPerSec
	}
}

// ms converts nanoseconds to milliseconds.
func ms(ns int64) float64 { return float64(ns) / 1e6 }

func rate(n int, from, to time.Time) float64 {
	d := to.Sub(from).Seconds()
	if n == 0 || d <= 0 {
		return 0
	}
	return float64(n) / d
}

func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.Sort(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), N: len(v)}
}

// counterSum adds up every series of the counter family name.
func counterSum(g prometheus.Gatherer, name string) float64 {
	fams, err := g.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += counterValue(m)
		}
	}
	return sum
}

func counterValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return 0
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// peakRSSMB is the process's peak resident set (ru_maxrss is in KiB on Linux).
func peakRSSMB() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

// writeHeapProfile writes the heap profile to path ("" : nothing).
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// perMessage is mb megabytes spread over n messages, in bytes.
func perMessage(mb float64, n int) float64 { return mb * (1 << 20) / float64(max(n, 1)) }

// heapInUseMB is this process's Go heap in use right after a collection.
func heapInUseMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// serverMem samples an external NATS server's resident memory from its
// monitoring endpoint (/varz "mem", bytes) every half second.
type serverMem struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	last, max float64
}

func watchServerMem(ctx context.Context, monitor string) *serverMem {
	ctx, cancel := context.WithCancel(ctx)
	m := &serverMem{cancel: cancel, done: make(chan struct{})}
	url := strings.TrimSuffix(monitor, "/") + "/varz"
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if mb, err := varzMemMB(ctx, client, url); err == nil {
				m.mu.Lock()
				m.last, m.max = mb, max(m.max, mb)
				m.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

// current is the latest sample in MB (0: none yet).
func (m *serverMem) current() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// stop ends the sampling and returns the peak in MB; it may be called again.
func (m *serverMem) stop() float64 {
	m.cancel()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.max
}

func varzMemMB(ctx context.Context, client *http.Client, url string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var v struct {
		Mem int64 `json:"mem"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, fmt.Errorf("%s: %w", url, err)
	}
	return float64(v.Mem) / (1 << 20), nil
}

// currentRSSMB reads the resident set from /proc/self/statm (Linux).
func currentRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.Atoi(f[1])
	return float64(pages) * float64(os.Getpagesize()) / (1 << 20)
}

// rawPublish measures JetStream's publish rate on this server: n messages
// of size bytes to a file-storage stream, asynchronously with at most 4096
// pending, the way the bench publishes to sms.outbound. The stream is
// deleted after.
func rawPublish(ctx context.Context, js jetstream.JetStream, n, size int) (float64, error) {
	name := "BENCH_RAW_" + strings.ToUpper(rand.Text()[:6])
	subject := "bench.raw." + strings.ToLower(name)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage}); err != nil {
		return 0, fmt.Errorf("bench: raw stream: %w", err)
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), name)
	data := make([]byte, size)
	for i := range data {
		data[i] = 'x'
	}
	start := time.Now()
	for i := range n {
		if _, err := js.PublishAsync(subject, data, jetstream.WithMsgID(name+strconv.Itoa(i)), jetstream.WithStallWait(time.Minute)); err != nil {
			return 0, fmt.Errorf("bench: raw publish: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(time.Minute):
		return 0, errors.New("bench: raw publishes not acknowledged after a minute")
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func printBench(w io.Writer, r BenchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	receipts := "off"
	if r.Receipts {
		receipts = "on"
	}
	fmt.Fprintf(tw, "messages\t%d (%d part(s), %d bytes on sms.outbound)\n", r.Messages, r.Parts, r.MessageBytes)
	fmt.Fprintf(tw, "links × instances\t%d × %d, receipts %s, %s\n", r.Links, r.Instances, receipts, r.Kind)
	fmt.Fprintf(tw, "accepted\t%.0f msg/s\n", r.AcceptedPerSec)
	fmt.Fprintf(tw, "accepted→submitted\t%.0f msg/s\n", r.SubmittedPerSec)
	if r.Receipts {
		fmt.Fprintf(tw, "accepted→delivered\t%.0f msg/s\n", r.DeliveredPerSec)
	}
	fmt.Fprintf(tw, "raw JetStream publish\t%.0f msg/s (pipeline/raw %.3f)\n", r.RawPublishPerSec, r.Ratio)
	fmt.Fprintf(tw, "latency accepted→submitted\tp50 %.1f ms  p90 %.1f ms  p99 %.1f ms\n", r.LatencySubmitted.P50, r.LatencySubmitted.P90, r.LatencySubmitted.P99)
	if r.Receipts {
		fmt.Fprintf(tw, "latency accepted→delivered\tp50 %.1f ms  p90 %.1f ms  p99 %.1f ms\n", r.LatencyDelivered.P50, r.LatencyDelivered.P90, r.LatencyDelivered.P99)
	}
	for _, l := range r.PerLink {
		fmt.Fprintf(tw, "link %s\trate %d/s, achieved %.0f/s, max %d in 1000 ms, %d submits, %d throttled\n", l.Name, l.Rate, l.Achieved, l.MaxInSecond, l.Submits, l.Throttled)
	}
	fmt.Fprintf(tw, "throttles / retries\t%d / %d\n", r.Throttles, r.Retries)
	fmt.Fprintf(tw, "duplicates (seen twice by an SMSC)\t%d (risked by the metric: %d)\n", r.Duplicates, r.DuplicatesRisked)
	fmt.Fprintf(tw, "lost (not done) / double final\t%d / %d\n", r.Lost, r.DoubleFinal)
	fmt.Fprintf(tw, "final statuses\t%v\n", r.Statuses)
	fmt.Fprintf(tw, "CPU per 1000 messages\t%.3f s (whole process)\n", r.CPUSecPer1000)
	what := "pipeline, NATS server external"
	if r.EmbeddedNATS {
		what = "pipeline + embedded NATS"
	}
	fmt.Fprintf(tw, "peak RSS (%s)\t%.0f MB\n", what, r.PeakRSSMB)
	if r.PausedRSSMB > 0 {
		fmt.Fprintf(tw, "RSS with all queued (%s)\t%.0f MB (%.0f MB before sending: %.0f bytes per queued message); Go heap after GC %.0f MB\n",
			what, r.PausedRSSMB, r.StartRSSMB, perMessage(r.PausedRSSMB-r.StartRSSMB, r.Messages), r.PausedHeapMB)
	}
	if r.ServerPeakRSSMB > 0 {
		fmt.Fprintf(tw, "NATS server RSS (/varz)\tpeak %.0f MB", r.ServerPeakRSSMB)
		if r.ServerPausedRSSMB > 0 {
			fmt.Fprintf(tw, ", all queued %.0f MB", r.ServerPausedRSSMB)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "elapsed\t%.1f s\n", r.Elapsed)
	tw.Flush()
}

// tracker follows every status event of this run's messages.
type tracker struct {
	prefix   string
	receipts bool
	cc       jetstream.ConsumeContext

	mu    sync.Mutex
	state trackState
}

type trackState struct {
	msgs                   []msgTimes
	accepted, queued, done int
	doubleFinal            int
	final                  map[string]int
}

// msgTimes are one message's times in Unix nanoseconds (0: not yet), kept
// small: a --pause run tracks a million of them in the measured process.
type msgTimes struct {
	accepted, submitted, delivered int64
	finals                         int32
	queued, done                   bool
}

func newTracker(runID string, n int, receipts bool) *tracker {
	return &tracker{prefix: "bench-" + runID + "-", receipts: receipts,
		state: trackState{msgs: make([]msgTimes, n), final: map[string]int{}}}
}

func (t *tracker) watch(ctx context.Context, js jetstream.JetStream) error {
	c, err := js.OrderedConsumer(ctx, streams.Status, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{status.Subject("*")}, // ids cannot be wildcards; filtered in handle
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("bench: status consumer: %w", err)
	}
	t.cc, err = c.Consume(t.handle, jetstream.PullMaxMessages(4096))
	return err
}

func (t *tracker) stop() {
	if t.cc != nil {
		t.cc.Stop()
	}
}

func (t *tracker) handle(m jetstream.Msg) {
	ev, err := status.DecodeEvent(m.Data())
	if err != nil {
		return
	}
	n, err := strconv.Atoi(strings.TrimPrefix(ev.ID, t.prefix))
	if err != nil || n < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.state
	if n >= len(s.msgs) {
		return
	}
	mt := &s.msgs[n]
	switch {
	case ev.Status == status.Accepted:
		if mt.accepted == 0 {
			s.accepted++
		}
		mt.accepted = ev.At.UnixNano()
	case ev.Status == status.Queued:
		if !mt.queued {
			mt.queued = true
			s.queued++
		}
	case ev.Status == status.Submitted:
		if mt.submitted == 0 {
			mt.submitted = ev.At.UnixNano()
		}
	case status.Terminal(ev.Status):
		mt.finals++
		if mt.finals == 2 {
			s.doubleFinal++
		}
		if mt.finals == 1 {
			s.final[ev.Status]++
			if ev.Status == status.Delivered {
				mt.delivered = ev.At.UnixNano()
			}
		}
	}
	if !mt.done && (mt.finals > 0 || (!t.receipts && mt.submitted != 0)) {
		mt.done = true
		s.done++
	}
}

func (t *tracker) snapshot() trackState {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state
	s.msgs = slices.Clone(s.msgs)
	s.final = make(map[string]int, len(t.state.final))
	for k, v := range t.state.final {
		s.final[k] = v
	}
	return s
}

var errStalled = errors.New("bench: stalled")

// wait shows count(state) on bar until it reaches the bar's maximum, or
// returns errStalled when it does not move for stall.
func (t *tracker) wait(ctx context.Context, bar *progressbar.ProgressBar, stall time.Duration, count func(*trackState) int) error {
	defer bar.Finish()
	total := int(bar.GetMax64())
	last, lastMove := -1, time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		t.mu.Lock()
		n := count(&t.state)
		t.mu.Unlock()
		_ = bar.Set(n)
		if n >= total {
			return nil
		}
		if n != last {
			last, lastMove = n, time.Now()
		} else if time.Since(lastMove) > stall {
			return errStalled
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
