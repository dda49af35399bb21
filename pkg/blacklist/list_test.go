package blacklist

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/phone"
	"github.com/smsflow/smsflow/streams"
)

const wait = 10 * time.Second

// env is a real NATS server with the smsflow buckets applied.
type env struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newEnv(t *testing.T) env {
	t.Helper()
	srv := natstest.RunServer(t, t.TempDir())
	nc, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatalf("apply streams: %v", err)
	}
	return env{srv: srv, nc: nc, js: js}
}

func testOptions(files ...string) Options {
	return Options{Files: files, PollInterval: 10 * time.Millisecond, ObjectBucket: streams.ObjectBucketBlacklist,
		KVBucket: streams.BucketBlacklist, Region: "CZ"}
}

// start runs a List on its own connection and waits until it is ready.
func (e env) start(t *testing.T, opts Options) (*List, *Metrics) {
	t.Helper()
	nc, js := natstest.Connect(t, e.srv)
	m := NewMetrics(prometheus.NewRegistry())
	l := New(nc, js, opts, slog.New(slog.DiscardHandler), m)
	natstest.Run(t, wait, l.Run)
	select {
	case <-l.Ready():
	case <-time.After(wait):
		t.Fatalf("list not ready after %v", wait)
	}
	return l, m
}

// writeFile replaces path atomically, as an operator should.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func loads(m *Metrics, source, result string) int {
	return int(testutil.ToFloat64(m.loads.WithLabelValues(source, result)))
}

func TestFileChangesAreLoadedWithoutRestart(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "blacklist.txt")
	writeFile(t, path, "+420600000001\n+420600000002\n")
	l, m := e.start(t, testOptions(path))
	if !l.Contains("+420600000001") || !l.Contains("+420600000002") || l.Contains("+420600000003") {
		t.Fatal("after start: want 001 and 002 blacklisted, 003 not")
	}

	writeFile(t, path, "number\n+420600000002\n+420600000003\n") // now a CSV, 001 dropped
	natstest.Eventually(t, wait, "003 blacklisted and 001 not after the file changed", func() bool {
		return l.Contains("+420600000003") && !l.Contains("+420600000001")
	})
	if !l.Contains("+420600000002") {
		t.Error("002, in both versions, is no longer blacklisted")
	}
	if n := loads(m, "file", "ok"); n != 2 {
		t.Errorf("file loads = %d, want 2 (start, change)", n)
	}
	if n := testutil.ToFloat64(m.numbers); n != 2 {
		t.Errorf("smsflow_blacklist_numbers = %v, want 2", n)
	}
}

func TestABadFileKeepsThePreviousNumbers(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "blacklist.txt")
	writeFile(t, path, "+420600000001\n+420600000002\n")
	l, m := e.start(t, testOptions(path))

	writeFile(t, path, "+420600000001\n+420600000003\nnot a number\n")
	natstest.Eventually(t, wait, "the bad file counted as a failed load", func() bool { return loads(m, "file", "error") == 1 })
	if !l.Contains("+420600000002") || l.Contains("+420600000003") {
		t.Fatal("a bad file changed the list: want the previous numbers (002 in, 003 out)")
	}
	if n := testutil.ToFloat64(m.numbers); n != 2 {
		t.Errorf("smsflow_blacklist_numbers = %v, want the previous 2", n)
	}
	if err := os.Remove(path); err != nil { // a vanished file keeps its numbers too
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "the missing file counted as a failed load", func() bool { return loads(m, "file", "error") == 2 })
	if !l.Contains("+420600000002") {
		t.Fatal("a deleted file emptied the list")
	}

	writeFile(t, path, "+420600000003\n")
	natstest.Eventually(t, wait, "the fixed file loaded", func() bool { return l.Contains("+420600000003") })
	if l.Contains("+420600000002") {
		t.Error("002 still blacklisted after the fixed file dropped it")
	}
	if ok, bad := loads(m, "file", "ok"), loads(m, "file", "error"); ok != 2 || bad != 2 {
		t.Errorf("file loads ok=%d error=%d, want 2 and 2 (a bad version is not retried)", ok, bad)
	}
}

func TestABadFileAtStartFailsRun(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "blacklist.txt")
	writeFile(t, path, "+420600000001\n+42060000000x\n")
	l := New(e.nc, e.js, testOptions(path), slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := l.Run(ctx)
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(err.Error(), path) {
		t.Fatalf("Run = %v, want an error naming %s line 2", err, path)
	}
	select {
	case <-l.Ready():
		t.Fatal("Ready closed although the list did not load")
	default:
	}
}

// objects returns the blacklist's Object Store bucket.
func (e env) objects(ctx context.Context, t *testing.T) jetstream.ObjectStore {
	t.Helper()
	obs, err := e.js.ObjectStore(ctx, streams.ObjectBucketBlacklist)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

func TestObjectStoreListsAreFollowed(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	obs := e.objects(ctx, t)
	if _, err := obs.PutString(ctx, "complaints.txt", "+420600000001\n"); err != nil {
		t.Fatal(err)
	}
	l, m := e.start(t, testOptions())
	if !l.Contains("+420600000001") {
		t.Fatal("an object present at start is not loaded by Ready")
	}

	if _, err := obs.PutString(ctx, "crm.csv", "id,msisdn\n1,+420600000002\n2,600000003\n"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "a new object's numbers blacklisted", func() bool {
		return l.Contains("+420600000002") && l.Contains("+420600000003")
	})
	if _, err := obs.PutString(ctx, "crm.csv", "id,msisdn\n1,+420600000002\n2,bad\n"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "the bad object counted as a failed load", func() bool { return loads(m, "object", "error") == 1 })
	if !l.Contains("+420600000003") {
		t.Fatal("a bad object dropped its previous numbers")
	}
	if err := obs.Delete(ctx, "crm.csv"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "a deleted object's numbers no longer blacklisted", func() bool {
		return !l.Contains("+420600000002") && !l.Contains("+420600000003")
	})
	if !l.Contains("+420600000001") {
		t.Error("deleting one object dropped another's numbers")
	}
	if n := loads(m, "object", "ok"); n != 2 {
		t.Errorf("object loads ok = %d, want 2", n)
	}
}

func TestABadObjectAtStartFailsRun(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.objects(ctx, t).PutString(ctx, "bad.txt", "+420600000001\n\n12\n"); err != nil {
		t.Fatal(err)
	}
	l := New(e.nc, e.js, testOptions(), slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	err := l.Run(ctx)
	var le *LineError
	if !errors.As(err, &le) || le.Line != 3 || !strings.Contains(err.Error(), "bad.txt") {
		t.Fatalf("Run = %v, want an error naming bad.txt line 3", err)
	}
}

func TestRuntimeDecisionsReachEveryInstanceAndBeatTheLists(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "blacklist.txt")
	writeFile(t, path, "+420600000001\n")
	a, ma := e.start(t, testOptions(path))
	b, _ := e.start(t, testOptions(path))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	st, err := a.Add(ctx, "600 000 002", "asked by phone")
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if st.Number != "+420600000002" || !st.Blacklisted || st.Source != "runtime" {
		t.Errorf("Add = %+v, want +420600000002 blacklisted at runtime", st)
	}
	if !a.Contains("+420600000002") {
		t.Fatal("Add returned before its own list applied it")
	}
	natstest.Eventually(t, wait, "the other instance sees the add", func() bool { return b.Contains("+420600000002") })

	if _, err := b.Remove(ctx, "+420600000001", "consent given"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	natstest.Eventually(t, wait, "a runtime remove beats the file on the other instance", func() bool { return !a.Contains("+420600000001") })
	got, err := a.Check("+420600000001")
	if err != nil || got.Blacklisted || got.Source != "runtime" || got.Note != "consent given" {
		t.Errorf("Check = %+v, %v; want allowed by a runtime decision noted \"consent given\"", got, err)
	}
	if n := testutil.ToFloat64(ma.numbers); n != 1 {
		t.Errorf("smsflow_blacklist_numbers = %v, want 1 (002 added, 001 removed)", n)
	}

	// Deleting the decision hands the number back to the file.
	kv, err := e.js.KeyValue(ctx, streams.BucketBlacklist)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "420600000001"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "the file decides again once the runtime decision is deleted", func() bool {
		return a.Contains("+420600000001") && b.Contains("+420600000001")
	})

	if _, err := a.Add(ctx, "+42060000000", ""); !errors.Is(err, phone.ErrInvalid) {
		t.Errorf("Add of a short number = %v, want phone.ErrInvalid", err)
	}
	// A third instance started now loads the decisions already made.
	c, _ := e.start(t, testOptions())
	if !c.Contains("+420600000002") {
		t.Error("a new instance does not load the runtime adds made before it started")
	}
}

func TestNotReadyBeforeRun(t *testing.T) {
	e := newEnv(t)
	l := New(e.nc, e.js, testOptions(), slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if _, err := l.Check("+420600000001"); !errors.Is(err, ErrNotReady) {
		t.Errorf("Check before Run = %v, want ErrNotReady", err)
	}
	if _, err := l.Add(context.Background(), "+420600000001", ""); !errors.Is(err, ErrNotReady) {
		t.Errorf("Add before Run = %v, want ErrNotReady", err)
	}
}

func TestRequestSubjects(t *testing.T) {
	e := newEnv(t)
	e.start(t, testOptions())
	ask := func(op, body string) Reply {
		t.Helper()
		msg, err := e.nc.Request("smsflow.blacklist."+op, []byte(body), wait)
		if err != nil {
			t.Fatalf("request %s: %v", op, err)
		}
		var r Reply
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			t.Fatalf("reply %q: %v", msg.Data, err)
		}
		return r
	}
	if r := ask("add", `{"number":"+420 600 000 009","note":"complaint"}`); r.Error != "" || r.Number != "+420600000009" || !r.Blacklisted {
		t.Errorf("add = %+v, want +420600000009 blacklisted", r)
	}
	if r := ask("check", `{"number":"00420600000009"}`); !r.Blacklisted || r.Note != "complaint" {
		t.Errorf("check = %+v, want blacklisted with the note", r)
	}
	if r := ask("remove", `{"number":"+420600000009"}`); r.Error != "" || r.Blacklisted {
		t.Errorf("remove = %+v, want not blacklisted", r)
	}
	if r := ask("check", `{"number":"+420600000009"}`); r.Blacklisted {
		t.Errorf("check after remove = %+v, want not blacklisted", r)
	}
	for _, c := range []struct{ op, body, has string }{
		{"add", `{"number":"+4206000000091234"}`, "invalid phone number"},
		{"add", `{"number":`, "must be JSON"},
		{"list", `{"number":"+420600000009"}`, "unknown operation"},
	} {
		if r := ask(c.op, c.body); !strings.Contains(r.Error, c.has) || r.Blacklisted {
			t.Errorf("%s %s = %+v, want an error saying %q", c.op, c.body, r, c.has)
		}
	}
}

func TestHTTPHandler(t *testing.T) {
	e := newEnv(t)
	l, _ := e.start(t, testOptions())
	mux := http.NewServeMux()
	l.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, Reply) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r Reply
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, b, err)
		}
		return resp.StatusCode, r
	}
	if code, r := do("POST", "/v1/blacklist", `{"number":"+420600000007","note":"api"}`); code != 200 || !r.Blacklisted || r.Number != "+420600000007" {
		t.Errorf("POST = %d %+v, want 200 blacklisted", code, r)
	}
	if !l.Contains("+420600000007") {
		t.Error("POST answered before the number was blacklisted here")
	}
	if code, r := do("GET", "/v1/blacklist/+420600000007", ""); code != 200 || !r.Blacklisted || r.Source != "runtime" || r.Note != "api" {
		t.Errorf("GET = %d %+v, want 200 blacklisted at runtime with the note", code, r)
	}
	if code, r := do("DELETE", "/v1/blacklist/+420600000007", ""); code != 200 || r.Blacklisted {
		t.Errorf("DELETE = %d %+v, want 200 not blacklisted", code, r)
	}
	if code, r := do("GET", "/v1/blacklist/+420600000007", ""); code != 200 || r.Blacklisted {
		t.Errorf("GET after DELETE = %d %+v, want not blacklisted", code, r)
	}
	for _, c := range []struct{ method, path, body, has string }{
		{"POST", "/v1/blacklist", `{"number":"abc"}`, "letters"},
		{"POST", "/v1/blacklist", `{"number":`, "body must be JSON"},
		{"POST", "/v1/blacklist", `{"number":"` + strings.Repeat("1", 5000) + `"}`, "too large"},
		{"GET", "/v1/blacklist/12", "", "invalid phone number"},
		{"DELETE", "/v1/blacklist/+1", "", "invalid phone number"},
	} {
		if code, r := do(c.method, c.path, c.body); code != 400 || !strings.Contains(r.Error, c.has) {
			t.Errorf("%s %s = %d %+v, want 400 saying %q", c.method, c.path, code, r, c.has)
		}
	}
}

// Lookups run while every kind of change lands; under -race this proves
// the snapshots are shared without data races, and the end state is exact.
func TestLookupsDuringChanges(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "blacklist.txt")
	writeFile(t, path, "+420600000001\n")
	l, m := e.start(t, testOptions(path))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stop := make(chan struct{})
	done := make(chan int)
	const readers = 2
	for range readers {
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					done <- n
					return
				default:
					l.Contains("+420600000001")
					l.Contains("+420600000150")
					n++
					runtime.Gosched() // leave the changes some CPU on a small machine
				}
			}
		}()
	}
	for i := range 20 {
		if _, err := l.Add(ctx, "+420600000"+strconv.Itoa(100+i), ""); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	writeFile(t, path, "+420600000002\n")
	natstest.Eventually(t, wait, "the file change loaded", func() bool { return l.Contains("+420600000002") })
	close(stop)
	lookups := 0
	for range readers {
		lookups += <-done
	}
	if lookups == 0 {
		t.Fatal("no lookup ran during the changes")
	}
	if n := testutil.ToFloat64(m.numbers); n != 21 {
		t.Errorf("smsflow_blacklist_numbers = %v, want 21 (20 added, 1 in the file)", n)
	}
	if l.Contains("+420600000001") || !l.Contains("+420600000119") {
		t.Error("end state wrong: want 001 dropped with the file, 119 added")
	}
}

// A changed file is loaded only once it looked the same on two polls, so a
// file still being written is not loaded half-way. poll is called directly:
// no ticker, no timing.
func TestAFileIsLoadedOnceItSettles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blacklist.txt")
	writeFile(t, path, "+420600000001\n")
	m := NewMetrics(prometheus.NewRegistry())
	l := New(nil, nil, testOptions(path), slog.New(slog.DiscardHandler), m)
	fw := newFileWatch(l, []string{path})
	if err := fw.poll(true); err != nil {
		t.Fatal(err)
	}
	if !l.Contains("+420600000001") {
		t.Fatal("the first poll did not load the file")
	}
	// Half a file: a plain append, as a slow writer would leave it.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("+420600000002\n+420"); err != nil {
		t.Fatal(err)
	}
	if err := fw.poll(false); err != nil || l.Contains("+420600000002") {
		t.Fatalf("poll right after a change = %v, 002 blacklisted %v; want it left for the next poll", err, l.Contains("+420600000002"))
	}
	if _, err := f.WriteString("600000003\n"); err != nil { // the writer finishes
		t.Fatal(err)
	}
	if err := fw.poll(false); err != nil || l.Contains("+420600000002") {
		t.Fatalf("poll after a second change = %v; want it still waiting", err)
	}
	if err := fw.poll(false); err != nil {
		t.Fatalf("poll of the settled file: %v", err)
	}
	if !l.Contains("+420600000002") || !l.Contains("+420600000003") {
		t.Fatal("the settled file was not loaded")
	}
	if ok, bad := loads(m, "file", "ok"), loads(m, "file", "error"); ok != 2 || bad != 0 {
		t.Errorf("file loads ok=%d error=%d, want 2 and 0: the half-written file was never read", ok, bad)
	}
}
