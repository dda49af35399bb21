package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/pkg/status/statustest"
	"github.com/smsflow/smsflow/streams"
)

const secret = "whsec-test-7f3a"

// receiver is a webhook endpoint that records what it got and checks every
// signature by recomputing it here, independently of Sign.
type receiver struct {
	t         *testing.T
	failFirst int64 // answer 503 to this many requests first
	block     chan struct{}

	mu                    sync.Mutex
	requests              int64
	got                   map[string][]string // message id -> statuses, in arrival order
	eventIDs              map[string]int      // X-Smsflow-Event-Id -> times accepted
	inFlight, maxInFlight int
	badSig                int
}

func newReceiver(t *testing.T, failFirst int64) (*receiver, *httptest.Server) {
	r := &receiver{t: t, failFirst: failFirst, got: map[string][]string{}, eventIDs: map[string]int{}}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests++
	n := r.requests
	r.inFlight++
	r.maxInFlight = max(r.maxInFlight, r.inFlight)
	if !validSignature(req.Header.Get("X-Smsflow-Signature"), body) {
		r.badSig++
	}
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.inFlight--; r.mu.Unlock() }()
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	refuse := n <= r.failFirst
	r.mu.Unlock()
	if refuse {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var ev status.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("webhook body is not a status event: %v: %s", err, body)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[ev.ID] = append(r.got[ev.ID], ev.Status)
	r.eventIDs[req.Header.Get("X-Smsflow-Event-Id")]++
}

// validSignature checks "t=<unix>,v1=<hex hmac_sha256(secret, t + "." + body)>"
// as a receiver following the README would.
func validSignature(h string, body []byte) bool {
	var ts, sig string
	for _, kv := range strings.Split(h, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(unix, 0)).Abs() > 5*time.Minute {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(sig), []byte(want))
}

// onceInOrder fails the test unless every message got life, in order, and
// every event id was accepted once.
func onceInOrder(t *testing.T, got map[string][]string, ids map[string]int, life []string) {
	t.Helper()
	for id, sts := range got {
		if !slices.Equal(sts, life) {
			t.Errorf("%s got %v, want %v in that order, once each", id, sts, life)
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s accepted %d times, want once", id, n)
		}
	}
}

func (r *receiver) snapshot() (map[string][]string, map[string]int, int64, int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := map[string][]string{}
	for k, v := range r.got {
		got[k] = slices.Clone(v)
	}
	ids := map[string]int{}
	for k, v := range r.eventIDs {
		ids[k] = v
	}
	return got, ids, r.requests, r.maxInFlight, r.badSig
}

// total is how many statuses the receiver accepted.
func (r *receiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.got {
		n += len(v)
	}
	return n
}

func newStage(t *testing.T, js jetstream.JetStream, pub *status.Publisher, opts Options) (*Stage, *Metrics) {
	t.Helper()
	if opts.BackoffMin == 0 {
		opts.BackoffMin, opts.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
	}
	opts.Secret = secret
	m := NewMetrics(prometheus.NewRegistry())
	return New(js, pub, opts, slog.New(slog.DiscardHandler), m), m
}

// publish writes a message's life: the statuses given, with an attempt
// record (not a status, so never sent) after queued.
func publish(t *testing.T, pub *status.Publisher, id, callback string, statuses ...string) {
	t.Helper()
	for _, st := range statuses {
		ev := status.Event{ID: id, Status: st, Attempt: 1}
		if st == status.Accepted {
			ev.CallbackURL, ev.Campaign = callback, "c"
		}
		if err := pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		if st == status.Queued {
			if err := pub.Publish(context.Background(), status.Event{ID: id, Status: status.Retry, Attempt: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A receiver that fails its first 100 requests still gets every status of
// every message, each once, in order per message, each request signed.
func TestAFailingReceiverGetsEveryStatusOnceAndInOrder(t *testing.T) {
	_, js, pub := statustest.Setup(t)
	rcv, srv := newReceiver(t, 100)
	life := []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}
	const msgs = 60
	for i := range msgs {
		cb := srv.URL + "/hook?m=" + strconv.Itoa(i)
		if i%2 == 0 {
			cb = "" // these go to the default URL
		}
		publish(t, pub, fmt.Sprintf("w-%02d", i), cb, life...)
	}
	publish(t, pub, "bad-url", "ftp://example.com/x", status.Accepted, status.Rejected) // not sent anywhere
	s, m := newStage(t, js, pub, Options{DefaultURL: srv.URL + "/default"})
	natstest.Run(t, 10*time.Second, s.Run)

	want := msgs * len(life)
	natstest.Eventually(t, 40*time.Second, fmt.Sprintf("receiver accepts %d statuses", want), func() bool { return rcv.total() >= want })
	// Settled: nothing more comes.
	settled(t, js, streams.Status, streams.ConsumerWebhooks)
	got, ids, requests, _, badSig := rcv.snapshot()
	if len(got) != msgs {
		t.Fatalf("statuses for %d messages, want %d (bad-url must get none): %v", len(got), msgs, got)
	}
	onceInOrder(t, got, ids, life)
	if len(ids) != want || requests != int64(want)+100 {
		t.Errorf("%d distinct event ids over %d requests, want %d over %d (%d failed first)", len(ids), requests, want, want+100, 100)
	}
	if badSig != 0 {
		t.Errorf("%d requests with a signature that does not verify", badSig)
	}
	if d := testutil.ToFloat64(m.events.WithLabelValues("delivered")); d != float64(want) {
		t.Errorf("delivered metric = %v, want %d", d, want)
	}
	if f := testutil.ToFloat64(m.events.WithLabelValues("failed")); f == 0 {
		t.Error("failed metric = 0, want the 100 refused requests counted")
	}
	t.Logf("%d requests, %d accepted; metrics: failed %v deferred %v duplicate %v", requests, want,
		testutil.ToFloat64(m.events.WithLabelValues("failed")), testutil.ToFloat64(m.events.WithLabelValues("deferred")),
		testutil.ToFloat64(m.events.WithLabelValues("duplicate")))
}

// eachWait runs f with retry waits under a second (naked back to the
// consumer) and with waits of a second or more (parked out of it); parked
// says which.
func eachWait(t *testing.T, f func(t *testing.T, min, max time.Duration, parked bool)) {
	t.Run("naked", func(t *testing.T) { f(t, 10*time.Millisecond, 100*time.Millisecond, false) })
	t.Run("parked", func(t *testing.T) { f(t, time.Second, 2*time.Second, true) })
}

// checkParked fails the test if the stage parked nothing when it should
// have, or anything when it should not.
func checkParked(t *testing.T, m *Metrics, parked bool) {
	t.Helper()
	if p := testutil.ToFloat64(m.events.WithLabelValues("parked")); (p > 0) != parked {
		t.Errorf("parked metric = %v, want parking %v", p, parked)
	}
}

// A host that does not answer holds at most PerHost requests, and another
// host gets all its statuses meanwhile.
func TestASlowHostDoesNotHoldUpAnother(t *testing.T) { eachWait(t, testASlowHostDoesNotHoldUpAnother) }

func testASlowHostDoesNotHoldUpAnother(t *testing.T, min, max time.Duration, parked bool) {
	_, js, pub := statustest.Setup(t)
	slow, slowSrv := newReceiver(t, 0)
	slow.block = make(chan struct{})
	released := sync.OnceFunc(func() { close(slow.block) })
	t.Cleanup(released) // before the server's Close, which waits for handlers
	fast, fastSrv := newReceiver(t, 0)
	life := []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}
	const each = 20
	for i := range each {
		publish(t, pub, fmt.Sprintf("slow-%02d", i), slowSrv.URL, life...)
		publish(t, pub, fmt.Sprintf("fast-%02d", i), fastSrv.URL, life...)
	}
	s, m := newStage(t, js, pub, Options{PerHost: 2, Concurrency: 8, BackoffMin: min, BackoffMax: max})
	start := time.Now()
	natstest.Run(t, 20*time.Second, s.Run)

	natstest.Eventually(t, 30*time.Second, "the fast host gets all its statuses while the slow one hangs", func() bool { return fast.total() == each*len(life) })
	_, _, slowRequests, slowMax, _ := slow.snapshot()
	if slowMax > 2 {
		t.Fatalf("slow host had %d requests in flight, want at most 2 (PerHost)", slowMax)
	}
	if slowRequests == 0 {
		t.Fatal("slow host got no request: the test proves nothing")
	}
	t.Logf("fast host done after %v", time.Since(start))
	released()
	natstest.Eventually(t, 30*time.Second, "the slow host gets everything once it answers", func() bool { return slow.total() == each*len(life) })
	t.Logf("slow host done after %v", time.Since(start))
	checkParked(t, m, parked)
	got, _, _, _, _ := slow.snapshot()
	for id, sts := range got {
		if !slices.Equal(sts, life) {
			t.Errorf("%s got %v, want %v", id, sts, life)
		}
	}
}

// An event undelivered past MaxAge is given up, and the message's next
// status is delivered: one dead event does not block the rest for ever.
func TestAnEventPastMaxAgeIsGivenUpAndTheNextGoesOut(t *testing.T) {
	eachWait(t, testAnEventPastMaxAgeIsGivenUpAndTheNextGoesOut)
}

func testAnEventPastMaxAgeIsGivenUpAndTheNextGoesOut(t *testing.T, min, max time.Duration, parked bool) {
	_, js, pub := statustest.Setup(t)
	var refuse atomic.Bool
	refuse.Store(true)
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		var ev status.Event
		_ = json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		got = append(got, ev.Status)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	s, m := newStage(t, js, pub, Options{MaxAge: time.Hour, BackoffMin: min, BackoffMax: max})
	var offset atomic.Int64
	s.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	publish(t, pub, "old", srv.URL, status.Accepted)
	natstest.Run(t, 10*time.Second, s.Run)
	natstest.Eventually(t, 20*time.Second, "the first attempt fails", func() bool {
		return testutil.ToFloat64(m.events.WithLabelValues("failed")) >= 1
	})
	offset.Store(int64(2 * time.Hour)) // the receiver stayed down past max_age
	natstest.Eventually(t, 20*time.Second, "the event is given up", func() bool {
		return testutil.ToFloat64(m.events.WithLabelValues("expired")) == 1
	})
	offset.Store(0)
	refuse.Store(false)
	publish(t, pub, "old", "", status.Rejected)
	natstest.Eventually(t, 20*time.Second, "the next status is delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if got[0] != status.Rejected {
		t.Fatalf("got %v, want only rejected (accepted was given up)", got)
	}
	checkParked(t, m, parked)
}

func TestSignIsTheDocumentedHMAC(t *testing.T) {
	body := []byte(`{"id":"m1","status":"delivered"}`)
	at := time.Unix(1764000000, 0)
	got := Sign("k", at, body)
	mac := hmac.New(sha256.New, []byte("k"))
	mac.Write([]byte("1764000000." + string(body)))
	if want := "t=1764000000,v1=" + hex.EncodeToString(mac.Sum(nil)); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

// The secret never reaches the log.
func TestTheSecretIsNotLogged(t *testing.T) {
	_, js, pub := statustest.Setup(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The URL's token and user info are secrets too: a connection refused
	// is logged with where it went, not with them.
	s := New(js, pub, Options{Secret: config.Secret(secret), DefaultURL: "http://hook:pw-in-url@127.0.0.1:1/x?token=tok-in-url", BackoffMin: 10 * time.Millisecond}, log, NewMetrics(prometheus.NewRegistry()))
	log.Info("options", "opts", s.opts)
	mu.Lock()
	if strings.Contains(buf.String(), secret) {
		t.Errorf("the secret is in the options' log line:\n%s", buf.String())
	}
	buf.Reset() // the operator's own default_url may be printed there; a stage log line may not
	mu.Unlock()
	publish(t, pub, "s1", "", status.Accepted)
	natstest.Run(t, 10*time.Second, s.Run)
	natstest.Eventually(t, 10*time.Second, "a failed delivery is logged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(buf.String(), "will retry")
	})
	mu.Lock()
	defer mu.Unlock()
	for _, sec := range []string{secret, "tok-in-url", "pw-in-url"} {
		if strings.Contains(buf.String(), sec) {
			t.Fatalf("%q is in the log:\n%s", sec, buf.String())
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A receiver down for an hour (by the stage's clock) gets every status when
// it is back: an hour is well inside max_age, so nothing is given up.
func TestAReceiverDownForAnHourGetsEverythingWhenBack(t *testing.T) {
	eachWait(t, testAReceiverDownForAnHourGetsEverythingWhenBack)
}

func testAReceiverDownForAnHourGetsEverythingWhenBack(t *testing.T, min, max time.Duration, parked bool) {
	_, js, pub := statustest.Setup(t)
	rcv, srv := newReceiver(t, 1<<40) // refuses everything until failFirst is lowered
	s, m := newStage(t, js, pub, Options{DefaultURL: srv.URL, BackoffMin: min, BackoffMax: max})
	var offset atomic.Int64
	s.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	life := []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}
	for i := range 10 {
		publish(t, pub, fmt.Sprintf("down-%d", i), "", life...)
	}
	natstest.Run(t, 10*time.Second, s.Run)
	refusals := 20.0
	if parked {
		refusals = 3 // a try every second or two
	}
	natstest.Eventually(t, 20*time.Second, fmt.Sprintf("the receiver refuses %v requests", refusals), func() bool {
		return testutil.ToFloat64(m.events.WithLabelValues("failed")) >= refusals
	})
	offset.Store(int64(time.Hour))
	rcv.mu.Lock()
	rcv.failFirst = 0 // back up
	rcv.mu.Unlock()
	natstest.Eventually(t, 30*time.Second, "all 40 statuses arrive", func() bool { return rcv.total() == 40 })
	got, ids, _, _, _ := rcv.snapshot()
	onceInOrder(t, got, ids, life)
	if e := testutil.ToFloat64(m.events.WithLabelValues("expired")); e != 0 {
		t.Errorf("%v statuses given up, want 0", e)
	}
	checkParked(t, m, parked)
}

func TestMetricsLint(t *testing.T) {
	statustest.LintMetrics(t, func(reg prometheus.Registerer) { NewMetrics(reg) })
}

// A webhooks instance killed mid-run (its connection closed, events unacked)
// loses nothing: the next one sends every status, in order per message.
// Delivery is at least once: a POST whose record died with the instance is
// sent again, with the same event id, which the receiver drops.
func TestAKilledInstanceLosesNothing(t *testing.T) {
	srv, js, pub := statustest.Setup(t)
	statustest.QuickRedelivery(t, js, streams.ConsumerWebhooks)
	rcv, hsrv := newReceiver(t, 0)
	life := []string{status.Accepted, status.Queued, status.Submitted, status.Delivered}
	const msgs = 50
	for i := range msgs {
		publish(t, pub, fmt.Sprintf("k-%02d", i), "", life...)
	}

	nc1, js1 := natstest.Connect(t, srv)
	s1, _ := newStage(t, js1, statustest.Publisher(t, js1), Options{DefaultURL: hsrv.URL, Grace: time.Second})
	stop1 := natstest.Run(t, 10*time.Second, s1.Run)
	natstest.Eventually(t, 20*time.Second, "the first instance delivers 40 statuses", func() bool { return rcv.total() >= 40 })
	nc1.Close()
	stop1()
	if n := rcv.total(); n >= msgs*len(life) {
		t.Fatalf("the first instance delivered all %d before it was killed: the test proves nothing", n)
	}

	s2, m2 := newStage(t, js, pub, Options{DefaultURL: hsrv.URL})
	natstest.Run(t, 10*time.Second, s2.Run)
	natstest.Eventually(t, 30*time.Second, "every message gets its 4 statuses", func() bool {
		_, ids, _, _, _ := rcv.snapshot()
		return len(ids) == msgs*len(life)
	})
	got, ids, requests, _, badSig := rcv.snapshot()
	dups := 0
	for _, n := range ids {
		dups += n - 1
	}
	for id, sts := range got {
		// Drop repeats as a receiver would (here by status: each appears once in a life).
		var seen []string
		for _, st := range sts {
			if !slices.Contains(seen, st) {
				seen = append(seen, st)
			}
		}
		if !slices.Equal(seen, life) {
			t.Errorf("%s got %v, want %v in order", id, sts, life)
		}
	}
	if badSig != 0 {
		t.Errorf("%d requests with a bad signature", badSig)
	}
	t.Logf("%d requests for %d statuses: %d repeated after the kill (same event id); second instance: delivered %v, duplicate %v",
		requests, msgs*len(life), dups, testutil.ToFloat64(m2.events.WithLabelValues("delivered")), testutil.ToFloat64(m2.events.WithLabelValues("duplicate")))
}
