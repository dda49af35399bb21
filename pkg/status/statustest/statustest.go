// Package statustest gives the tests of the stages that read SMS_STATUS (the
// status indexer, webhooks) one way to stand up JetStream with every stream
// applied, a status publisher, and a consumer that redelivers quickly.
package statustest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Setup starts a JetStream server for the test, applies every stream, KV
// bucket and consumer of streams/, and returns the server, a connection's
// JetStream and a status publisher on it.
func Setup(t testing.TB) (*server.Server, jetstream.JetStream, *status.Publisher) {
	t.Helper()
	srv := natstest.RunServer(t, t.TempDir())
	_, js := natstest.Connect(t, srv)
	if err := streams.Apply(context.Background(), js, nil); err != nil {
		t.Fatal(err)
	}
	return srv, js, Publisher(t, js)
}

// Publisher is a status publisher on js.
func Publisher(t testing.TB, js jetstream.JetStream) *status.Publisher {
	t.Helper()
	pub, err := status.NewPublisher(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// QuickRedelivery sets the ack wait of the durable consumer on SMS_STATUS to
// one second: what a killed instance held comes back after 1 s, not 30.
func QuickRedelivery(t testing.TB, js jetstream.JetStream, durable string) {
	t.Helper()
	c, err := streams.Consumer(streams.Status, durable)
	if err != nil {
		t.Fatal(err)
	}
	c.AckWait = time.Second
	if _, err := js.CreateOrUpdateConsumer(context.Background(), streams.Status, c); err != nil {
		t.Fatal(err)
	}
}

// Life publishes the events of message id, statuses in order, each a
// separate event written as a stage would (attempt 1).
func Life(t testing.TB, pub *status.Publisher, id string, statuses ...string) {
	t.Helper()
	for _, st := range statuses {
		if err := pub.Publish(context.Background(), status.Event{ID: id, Status: st, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
}

// LintMetrics registers a stage's metrics on a new registry and fails the
// test on any problem Prometheus' linter finds (names, units, help).
func LintMetrics(t testing.TB, register func(prometheus.Registerer)) {
	t.Helper()
	reg := prometheus.NewRegistry()
	register(reg)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("metrics lint: %v %v", problems, err)
	}
}
