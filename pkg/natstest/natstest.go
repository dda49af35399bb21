// Package natstest starts real NATS servers with JetStream for tests, and
// gives the bounded wait every test here uses instead of time.Sleep.
package natstest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/smsflow/smsflow/streams"
)

// RunServer starts JetStream in-process on a random loopback port with its
// store in dir; pass the same dir twice to test a restart. The server is shut
// down when the test ends (Shutdown is idempotent, so a test may stop it early).
func RunServer(t testing.TB, dir string) *server.Server {
	t.Helper()
	return RunServerOnPort(t, dir, -1)
}

// RunServerOnPort is RunServer on a fixed port, for restarting a server
// where its clients expect it (reconnect tests).
func RunServerOnPort(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("natstest: server not ready after 10s")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Connect connects to s and returns the connection and its JetStream
// context; the connection is closed when the test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// Eventually polls cond every 10 ms until it is true, and fails the test with
// what (the expectation, in words) when it is still false after d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Run runs a stage's Run(ctx) in the background. The returned stop cancels
// it and fails the test unless Run returns nil within d; stop runs at
// cleanup too, so a test may call it early or not at all.
func Run(t testing.TB, d time.Duration, run func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v after cancel, want nil", err)
				}
			case <-time.After(d):
				t.Errorf("Run did not return within %v of cancel", d)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// Bucket starts a server with every definition of streams/ applied and
// returns the KV bucket name, with the connection its JetStream uses.
func Bucket(t testing.TB, name string) (jetstream.KeyValue, *nats.Conn) {
	t.Helper()
	nc, js := Connect(t, RunServer(t, t.TempDir()))
	ctx := context.Background()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return kv, nc
}
