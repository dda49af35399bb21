package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

const (
	link   = "l1"
	pool   = "default"
	user   = "smsflow"
	passwd = "Pw9xQz"
	wait   = 15 * time.Second // bound on every wait; the happy path takes far less
)

// env is one JetStream server with the streams applied, and a simulator.
type env struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *status.Publisher
	sim *smscsim.Server
}

func newEnv(t *testing.T, simOpts smscsim.Options) *env {
	t.Helper()
	return newEnvOn(t, natstest.RunServer(t, t.TempDir()), simOpts)
}

// newEnvOn is newEnv on a server the test started, for stopping it.
func newEnvOn(t *testing.T, srv *server.Server, simOpts smscsim.Options) *env {
	t.Helper()
	nc, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := streams.Apply(ctx, js, []string{pool}); err != nil {
		t.Fatalf("apply streams: %v", err)
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	simOpts.SystemID, simOpts.Password = user, passwd
	return &env{t: t, nc: nc, js: js, pub: pub, sim: smscsim.NewServer(t, simOpts)}
}

// linkOpts is link l1 of pool default to the simulator.
func (e *env) linkOpts(rate, burst, window int) LinkOptions {
	return LinkOptions{Name: link, Pool: pool, Rate: rate, Burst: burst, Source: "Eshop",
		SMPP: smpplink.Config{Name: link, Addr: e.sim.Addr(), SystemID: user, Password: passwd,
			Window: window, RespTimeout: 2 * time.Second, BindInterval: 100 * time.Millisecond}}
}

func fastRetries(maxAttempts int) Options {
	return Options{MaxAttempts: maxAttempts, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Grace: 5 * time.Second}
}

// running is one egress stage running in the background.
type running struct {
	m    *Metrics
	halt func()
}

// run starts a stage; it is stopped (and must return nil) when the test ends,
// unless the test stops it first.
func (e *env) run(lo LinkOptions, opts Options) *running {
	e.t.Helper()
	return e.runLinks([]LinkOptions{lo}, opts)
}

// runLinks is run with several links. The stage must return within its grace
// and a few seconds of being stopped.
func (e *env) runLinks(los []LinkOptions, opts Options) *running {
	e.t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	s := New(e.js, e.pub, los, opts, slog.New(slog.DiscardHandler), m)
	return &running{m: m, halt: natstest.Run(e.t, max(wait, opts.Grace+5*time.Second), s.Run)}
}

// stop cancels the stage and waits for Run to return nil; a second call is a
// no-op.
func (r *running) stop() { r.halt() }

func (r *running) count(c *prometheus.CounterVec, labels ...string) float64 {
	return testutil.ToFloat64(c.WithLabelValues(labels...))
}

// dst is the recipient of message i, one each, so the simulator's
// AcceptedTo counts per message.
func dst(i int) string { return fmt.Sprintf("+4206000%05d", i) }

// simDst is dst as it reaches the SMSC (without "+").
func simDst(i int) string { return dst(i)[1:] }

func msgID(i int) string { return fmt.Sprintf("msg-%05d", i) }

// publish puts message i (i in [from, to)) on the pool's egress subject, as
// policy would.
func (e *env) publish(from, to int, edit func(*envelope.Message)) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i := from; i < to; i++ {
		m := envelope.Message{ID: msgID(i), To: dst(i), Text: fmt.Sprintf("message %d", i), Pool: pool,
			AcceptedAt: time.Now().UTC()}
		if edit != nil {
			edit(&m)
		}
		data, err := envelope.Encode(m)
		if err != nil {
			e.t.Fatal(err)
		}
		subject := streams.EgressSubject(pool)
		if m.Kind == envelope.Transactional {
			subject = streams.PrioritySubject(pool) // where policy puts them
		}
		if _, err := e.js.Publish(ctx, subject, data, jetstream.WithMsgID(m.ID)); err != nil {
			e.t.Fatalf("publish %s: %v", m.ID, err)
		}
	}
}

// history is every status event of a message.
func (e *env) history(id string) []status.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	h, err := e.pub.History(ctx, id, 100)
	if errors.Is(err, status.ErrNotFound) {
		return nil // no event yet
	}
	if err != nil {
		e.t.Fatalf("history of %s: %v", id, err)
	}
	return h
}

// events returns the events of a message with the given status.
func (e *env) events(id, st string) []status.Event {
	e.t.Helper()
	var out []status.Event
	for _, ev := range e.history(id) {
		if ev.Status == st {
			out = append(out, ev)
		}
	}
	return out
}

// bucket is the KV bucket name of the streams applied.
func (e *env) bucket(name string) jetstream.KeyValue {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, name)
	if err != nil {
		e.t.Fatalf("kv %s: %v", name, err)
	}
	return kv
}

// streamMsgs is the number of messages in a stream.
func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// acceptedEach reports whether messages [0, n) were each accepted at least
// once by the simulator.
func (e *env) acceptedEach(n int) bool {
	for i := range n {
		if e.sim.AcceptedTo(simDst(i)) == 0 {
			return false
		}
	}
	return true
}

// acceptedOnce fails the test unless messages [0, n) were each accepted
// exactly once.
func (e *env) acceptedOnce(n int) {
	e.t.Helper()
	for i := range n {
		if got := e.sim.AcceptedTo(simDst(i)); got != 1 {
			e.t.Fatalf("%s accepted %d times, want exactly once", msgID(i), got)
		}
	}
}
