package test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/egress"
	"github.com/smsflow/smsflow/services/smscsim"
)

// The crash tests kill one part of a running system three times at random
// moments of a run and start it again: the pipeline (kill -9, same data
// dir), the SMSC simulator (connections cut, receipts it held lost) and an
// external NATS server (kill -9, same store). Each run is
// CRASH_TEST_MESSAGES messages (default 20,000) at a link rate that does
// not bind. A killed process leaves up to the egress consumer's ack wait
// (60 s) of messages in hand, so each test takes a minute or more; they run
// in parallel.

// crashWindow is the link's submit window in these tests: the most submits a
// kill can catch between the SMSC's accept and the submitted record.
const crashWindow = 10

func crashMessages(t *testing.T) int {
	t.Helper()
	n := 20000
	if s := os.Getenv("CRASH_TEST_MESSAGES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 100 {
			t.Fatalf("CRASH_TEST_MESSAGES=%q: want a number ≥ 100", s)
		}
		n = v
	}
	return n
}

// crashExtra is the config over setup's: a rate that does not bind, quiet logs.
const crashExtra = ""

func crashEnv() []string {
	return []string{"SMSFLOW_LINKS__L1__RATE=20000", "SMSFLOW_LINKS__L1__BURST=200",
		"SMSFLOW_LINKS__L1__WINDOW=" + strconv.Itoa(crashWindow), "SMSFLOW_LOG__LEVEL=warn"}
}

// kill9 kills the pipeline with SIGKILL and waits for it to be gone.
func (p *pipeline) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Fatal("smsflow still running 30s after SIGKILL")
	}
}

// publishAll publishes n messages to sms.outbound with ids prefix-0..n-1 and
// a destination each (number(i)), and returns the ids.
func publishAll(t *testing.T, js jetstream.JetStream, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i)
		body := fmt.Sprintf(`{"id":%q,"to":%q,"text":"crash test %d"}`, ids[i], number(i), i)
		if _, err := js.PublishAsync("sms.outbound", []byte(body), jetstream.WithMsgID(ids[i]), jetstream.WithStallWait(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("publishes not acknowledged after a minute")
	}
	return ids
}

// killPoints are three random submit counts spread over the run, at which
// the tests kill something: one in each of [10%,30%), [35%,55%), [60%,80%).
func killPoints(n int) [3]int {
	var out [3]int
	for i, lo := range []float64{0.10, 0.35, 0.60} {
		out[i] = int((lo + rand.Float64()*0.2) * float64(n))
	}
	return out
}

// waitSubmits waits until the simulators have accepted at least k submits in
// all, then a random 0-100 ms more, so the kill lands mid-flight. When they
// stall, it fails with the pipeline's egress metrics and readiness.
func waitSubmits(t *testing.T, p *pipeline, k int, accepted func() int) {
	t.Helper()
	waitFor(t, 2*time.Minute, func() bool { return accepted() >= k }, func() string {
		return fmt.Sprintf("want %d submits before the kill, have %d; pipeline: %s%s", k, accepted(), p.diagnose(), p.stacks())
	})
	time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
}

// stacks stops a stalled pipeline with SIGQUIT and returns the stacks of
// its egress and pacing goroutines: where the stall is.
func (p *pipeline) stacks() string {
	before := len(p.logs.String())
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return "\nSIGQUIT: " + err.Error()
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
	var b strings.Builder
	b.WriteString("\ngoroutines in egress or pacing at the stall:\n")
	for g := range strings.SplitSeq(p.logs.String()[before:], "\n\n") {
		if (strings.Contains(g, "services/egress") || strings.Contains(g, "pkg/pacing")) && b.Len() < 16<<10 {
			b.WriteString(g + "\n\n")
		}
	}
	return b.String()
}

// diagnose says what the pipeline reports about itself: /readyz and its
// egress metrics.
func (p *pipeline) diagnose() string {
	var b strings.Builder
	if body, err := httpGet("http://" + p.httpAddr + "/readyz"); err != nil {
		fmt.Fprintf(&b, "readyz: %v; ", err)
	} else {
		fmt.Fprintf(&b, "readyz: %q; ", strings.TrimSpace(body))
	}
	body, err := httpGet("http://" + p.httpAddr + "/metrics")
	if err != nil {
		return b.String() + "metrics: " + err.Error()
	}
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "smsflow_egress_") || strings.HasPrefix(line, "smsflow_policy_messages_total") {
			b.WriteString(line + "; ")
		}
	}
	return b.String()
}

// duplicates counts the submits the simulators accepted beyond the first
// for each message (total: all accepted submits), and gives each to the
// first kill after the submit before it, or else to a kill less than
// aftermath before that submit: perKill[i] is what kill i doubled.
func duplicates(n int, kills []time.Time, aftermath time.Duration, sims ...*smscsim.Server) (dups, total int, perKill []int) {
	per := map[string][]time.Time{}
	for _, s := range sims {
		for _, sub := range s.Submits() {
			per[sub.Dest] = append(per[sub.Dest], sub.At)
			total++
		}
	}
	perKill = make([]int, len(kills))
	for i := range n {
		ats := per[simDest(i)]
		slices.SortFunc(ats, func(a, b time.Time) int { return a.Compare(b) })
		for j := 1; j < len(ats); j++ {
			dups++
			if k := blame(kills, ats[j-1], aftermath); k >= 0 {
				perKill[k]++
			}
		}
	}
	return dups, total, perKill
}

// blame is the kill a submit at first (then made again) is doubled by: the
// first kill after it, else the latest less than aftermath before it; -1
// for none.
func blame(kills []time.Time, first time.Time, aftermath time.Duration) int {
	for k, at := range kills {
		if at.After(first) {
			return k
		}
	}
	for k := len(kills) - 1; k >= 0; k-- {
		if first.Sub(kills[k]) < aftermath {
			return k
		}
	}
	return -1
}

// checkDuplicates fails unless the simulators accepted every message, and
// no kill doubled more than the window's worth of submits. aftermath is how
// long after a kill a submit still counts as that kill's: 0 when the kill is
// the whole outage (the pipeline's or the SMSC's process), longer for a NATS
// server, whose restart the pipeline still recovers from (reconnecting, an
// SMPP read loop held by a receipt it is storing) when new submits go out.
func checkDuplicates(t *testing.T, n int, kills []time.Time, aftermath time.Duration, sims ...*smscsim.Server) int {
	t.Helper()
	dups, total, perKill := duplicates(n, kills, aftermath, sims...)
	t.Logf("%d messages, %d submits accepted, %d duplicate submits, per kill %v", n, total, dups, perKill)
	if total != n+dups {
		t.Errorf("simulators accepted %d submits for %d messages and %d duplicates: some message was never submitted", total, n, dups)
	}
	if sum := sumInts(perKill); sum != dups {
		t.Errorf("%d duplicate submits came after the last kill (and its aftermath of %v): only a kill may double a submit", dups-sum, aftermath)
	}
	// Every kill costs at most the window in flight at it. (A NATS kill
	// cost up to two: a restarted server hands out again, as first
	// deliveries, messages egress holds or has just submitted; egress now
	// checks those, see services/egress/held.go.)
	bound := crashWindow
	for i, d := range perKill {
		if d > bound {
			t.Errorf("kill %d doubled %d submits, want at most %d (window %d)", i+1, d, bound, crashWindow)
		}
	}
	return dups
}

// checkOneTerminal fails unless every id has exactly one terminal event, a
// delivered one, except those in stranded (may be nil), which must have none.
func checkOneTerminal(t *testing.T, term map[string][]status.Event, ids []string, stranded map[string]bool) {
	t.Helper()
	bad := 0
	for _, id := range ids {
		evs := term[id]
		if stranded[id] {
			if len(evs) != 0 {
				t.Errorf("%s: stranded (its receipt died with the simulator) but has terminal events %+v", id, evs)
			}
			continue
		}
		if len(evs) != 1 || evs[0].Status != status.Delivered {
			if bad++; bad <= 10 {
				t.Errorf("%s: terminal events %+v, want exactly one delivered", id, evs)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d messages in all without exactly one delivered", bad)
	}
}

func TestKill9ThePipelineThreeTimesLosesNothing(t *testing.T) {
	t.Parallel()
	n := crashMessages(t)
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", ReceiptDelay: 20 * time.Millisecond})
	p := setup(t, t.TempDir(), sim.Addr(), crashExtra)
	p.env = crashEnv()
	p.start()
	_, js := p.connect()
	ids := publishAll(t, js, "k9", n)

	var kills []time.Time
	var counts []resubmitCount
	for i, k := range killPoints(n) {
		waitSubmits(t, p, k, sim.Accepted)
		counts = append(counts, p.killCounted())
		kills = append(kills, time.Now())
		t.Logf("kill %d after %d of %d submits", i+1, sim.Accepted(), n)
		p.start()
	}
	_, js = p.connect()
	log := watchStatuses(t, js)
	term := log.waitTerminal(t, 4*time.Minute, ids)
	checkOneTerminal(t, term, ids, nil)

	dups := checkDuplicates(t, n, kills, 0, sim)
	counts = append(counts, p.killCounted()) // the last process: nothing in flight now
	checkResubmitsCounted(t, counts, dups, len(kills))
}

// resubmitsMetric counts, in the process that makes it, each submit of a
// message whose earlier submit may have reached the SMSC unrecorded: the
// submits that may be duplicates.
const resubmitsMetric = "smsflow_egress_resubmits_unknown_total"

// resubmitCount is what one pipeline process counted in resubmitsMetric:
// read from its /metrics just before it was killed, and logged (egress
// logs each count, before the submit, in a line its dead output keeps).
type resubmitCount struct{ read, logged int }

// killCounted reads the pipeline's resubmitsMetric, kills it with SIGKILL
// and counts the resubmits its log recorded.
func (p *pipeline) killCounted() resubmitCount {
	p.t.Helper()
	read := p.metric(resubmitsMetric)
	p.kill9() // cmd.Wait has copied all of its output to p.logs
	return resubmitCount{read: int(read), logged: strings.Count(p.logs.String(), egress.ResubmitLog)}
}

// checkResubmitsCounted fails unless the processes together counted every
// duplicate the simulator saw, and not more than two windows per kill
// besides.
//
// A kill -9 takes the process's counter with it, so each is read just before
// its kill. A resubmit counted between that read and the kill would be
// missing from the read (and its duplicate is real if the process recorded
// the submit before dying); it is not lost to the test, because egress logs
// every count before the submit, and the output of a dead process stays:
// the reads plus what the logs have beyond them (late) are every count. A
// read never exceeds its log (same code, log first).
//
// The count exceeds the duplicates by what each kill held without the SMSC
// accepting it, and by the new messages among the first deliveries the next
// process checks: the embedded server dies too and forgets its last
// deliveries, so the restarted egress counts its first window of first
// deliveries as possible duplicates (services/egress/resubmit.go). One
// window of each: at most two windows per kill.
func checkResubmitsCounted(t *testing.T, counts []resubmitCount, dups, kills int) {
	t.Helper()
	read, late := 0, 0
	for i, c := range counts {
		if c.read < 0 || c.read > c.logged {
			t.Errorf("process %d: %s read %d, logged %d: the metric may lag its log, never lead it", i+1, resubmitsMetric, c.read, c.logged)
		}
		read += c.read
		late += max(c.logged-c.read, 0)
	}
	counted, bound := read+late, dups+2*crashWindow*kills
	t.Logf("%s by process (read before the kill / logged): %v; sum %d (+%d counted after the read) for %d duplicates, bound %d",
		resubmitsMetric, counts, read, late, dups, bound)
	if counted < dups {
		t.Errorf("%s counted %d resubmits (%d read + %d late), fewer than the %d duplicates the simulator saw", resubmitsMetric, counted, read, late, dups)
	}
	if counted > bound {
		t.Errorf("%s counted %d resubmits, more than the %d duplicates + 2 x window %d x %d kills", resubmitsMetric, counted, dups, crashWindow, kills)
	}
}

func TestTheSMSCDyingThreeTimesLosesNothing(t *testing.T) {
	t.Parallel()
	n := crashMessages(t)
	opts := smscsim.Options{SystemID: "e2e", Password: "pw-e2e", ReceiptDelay: 20 * time.Millisecond}
	sim := smscsim.NewServer(t, opts)
	opts.Listen = sim.Addr() // the next ones listen where the link dials
	p := setup(t, t.TempDir(), sim.Addr(), crashExtra)
	p.env = crashEnv()
	p.start()
	_, js := p.connect()
	ids := publishAll(t, js, "sd", n)

	sims := []*smscsim.Server{sim}
	accepted := func() int {
		sum := 0
		for _, s := range sims {
			sum += s.Accepted()
		}
		return sum
	}
	var kills []time.Time
	for i, k := range killPoints(n) {
		waitSubmits(t, p, k, accepted)
		// Close cuts every connection mid-flight, as a crash would: submits
		// in the window get no response, receipts not yet sent are gone.
		if err := sims[len(sims)-1].Close(); err != nil {
			t.Fatal(err)
		}
		kills = append(kills, time.Now())
		t.Logf("smsc down %d after %d of %d submits", i+1, accepted(), n)
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		next, err := smscsim.Start(opts)
		if err != nil {
			t.Fatalf("restart simulator on %s: %v", opts.Listen, err)
		}
		t.Cleanup(func() { next.Close() })
		sims = append(sims, next)
	}
	// Receipts held by a dead simulator never come: those messages stay
	// submitted. Which they are is exact: their SMSC ids are from a dead one
	// and have no receipt.
	dead := map[string]bool{}
	for _, s := range sims[:len(sims)-1] {
		for _, sub := range s.Submits() {
			dead[sub.MessageID] = true
		}
	}
	_, js = p.connect()
	log := watchStatuses(t, js)
	var stranded map[string]bool
	natstest.Eventually(t, 4*time.Minute, "every message delivered or submitted to a dead simulator without a receipt", func() bool {
		stranded = map[string]bool{}
		term := log.terminal()
		for _, id := range ids {
			if len(term[id]) > 0 {
				continue
			}
			sub, ok := log.latest(id, status.Submitted)
			if !ok || !dead[sub.SMSCID] {
				return false
			}
			stranded[id] = true
		}
		return true
	})
	time.Sleep(2 * time.Second) // a late receipt would land now, and fail the check below
	checkOneTerminal(t, log.terminal(), ids, stranded)
	dups := checkDuplicates(t, n, kills, 0, sims...)
	// The pipeline lived through it: every submit left without an answer is
	// in its metric, which must cover what the simulators doubled.
	risked := p.metric("smsflow_egress_duplicates_risked_total")
	t.Logf("%d stranded without a receipt; smsflow_egress_duplicates_risked_total %v", len(stranded), risked)
	if risked < float64(dups) {
		t.Errorf("duplicates_risked_total is %v, fewer than the %d duplicates the simulators saw", risked, dups)
	}
	if len(stranded) > 3*1000 {
		t.Errorf("%d messages stranded by 3 SMSC deaths: more than the receipts a simulator holds in 20 ms at this rate", len(stranded))
	}
}

// natsAftermath is how long after a NATS server's kill the pipeline is
// still recovering: the server is back within a second, but the client
// reconnects, and records and acks made during the outage are retried, so
// a duplicate then is the kill's, and the window bound still holds.
const natsAftermath = 15 * time.Second

func TestAnExternalNATSServerKilledThreeTimesLosesNothing(t *testing.T) {
	t.Parallel()
	n := crashMessages(t)
	srv := startNATSServer(t)
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", ReceiptDelay: 20 * time.Millisecond})
	p := setup(t, t.TempDir(), sim.Addr(), crashExtra)
	p.env = append(crashEnv(), "SMSFLOW_NATS__URL="+srv.url)
	p.natsURL = srv.url
	p.start()
	_, js := p.connect()
	ids := publishAll(t, js, "ns", n)
	var kills []time.Time
	for i, k := range killPoints(n) {
		waitSubmits(t, p, k, sim.Accepted)
		srv.kill9()
		kills = append(kills, time.Now())
		t.Logf("nats killed %d after %d of %d submits", i+1, sim.Accepted(), n)
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		srv.start()
	}
	waitFor(t, 3*time.Minute, func() bool { return sim.Accepted() >= n }, func() string {
		return fmt.Sprintf("simulator accepted %d of %d after the NATS restarts; pipeline: %s%s", sim.Accepted(), n, p.diagnose(), p.stacks())
	})
	_, js = p.connect() // a fresh connection to read the whole history
	log := watchStatuses(t, js)
	term := log.waitTerminal(t, 4*time.Minute, ids)
	checkOneTerminal(t, term, ids, nil)
	dups := checkDuplicates(t, n, kills, natsAftermath, sim)
	// The process lives through the kills, so its counters see every
	// submit that may have been made twice.
	risked, resubmits := p.metric("smsflow_egress_duplicates_risked_total"), p.metric("smsflow_egress_resubmits_unknown_total")
	t.Logf("smsflow_egress_duplicates_risked_total %v, resubmits_unknown_total %v, held_twice_total %v for %d duplicates",
		risked, resubmits, p.metric("smsflow_egress_held_twice_total"), dups)
	if risked+resubmits < float64(dups) {
		t.Errorf("the metrics count %v submits that may have doubled, fewer than the %d the simulator saw twice", risked+resubmits, dups)
	}
	p.stop()
}

// latest returns the newest event of id with status st.
func (l *statusLog) latest(id, st string) (status.Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	evs := l.events[id]
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Status == st {
			return evs[i], true
		}
	}
	return status.Event{}, false
}

// metric reads the pipeline's /metrics: for a bare name, the sum of its
// series; for one series ("name{labels}"), that series, and a test error when
// it is not there. -1 when it cannot be read, which fails any check against it.
func (p *pipeline) metric(sample string) float64 {
	p.t.Helper()
	body, err := httpGet("http://" + p.httpAddr + "/metrics")
	if err != nil {
		p.t.Errorf("metrics: %v", err)
		return -1
	}
	series := strings.Contains(sample, "{")
	var sum float64
	found := false
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, sample+" ") || !series && strings.HasPrefix(line, sample+"{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				p.t.Errorf("metric %s: %q: %v", sample, line, err)
				return -1
			}
			sum += v
			found = true
		}
	}
	if series && !found {
		p.t.Errorf("metric %s not found", sample)
		return -1
	}
	return sum
}

// natsServer is a nats-server process with JetStream on a fixed port and
// store, so it can be killed and started again where its clients expect it.
type natsServer struct {
	t    *testing.T
	url  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

var (
	natsBinOnce sync.Once
	natsBin     string
	natsBinErr  error
)

// startNATSServer builds nats-server (the module's own version, once per
// test binary) and starts it.
func startNATSServer(t *testing.T) *natsServer {
	t.Helper()
	natsBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nats-server-bin")
		if err != nil {
			natsBinErr = err
			return
		}
		natsBin = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsBinErr = fmt.Errorf("build nats-server: %v\n%s", err, out)
		}
	})
	if natsBinErr != nil {
		t.Fatal(natsBinErr)
	}
	port := freePort(t)
	s := &natsServer{t: t, url: fmt.Sprintf("nats://127.0.0.1:%d", port),
		args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir()}}
	s.start()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

func (s *natsServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(natsBin, s.args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()
	addr := strings.TrimPrefix(s.url, "nats://")
	natstest.Eventually(s.t, 30*time.Second, "nats-server listening on "+addr, func() bool { return dialable(addr) })
}

func (s *natsServer) kill9() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatal("nats-server still running 30s after SIGKILL")
	}
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func sumInts(v []int) int {
	s := 0
	for _, x := range v {
		s += x
	}
	return s
}
