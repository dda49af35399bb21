package broker_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/broker"
	"github.com/smsflow/smsflow/pkg/natstest"
)

var quiet = slog.New(slog.DiscardHandler)

func TestTheEmbeddedServerKeepsItsStreamsAcrossARestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := config.NATS{Listen: "127.0.0.1:0", DataDir: t.TempDir()}
	b, err := broker.Start(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.ClientURL(), "nats://127.0.0.1:") {
		t.Errorf("client url %q is not on loopback", b.ClientURL())
	}
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JS.Publish(ctx, "keep", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	b, err = broker.Start(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.JS.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatalf("stream lost across restart: %v", err)
	}
	if info, _ := s.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("messages after restart = %d, want 1", info.State.Msgs)
	}
}

func TestABusyListenAddressFailsAtOnceNamingTheKey(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	_, err = broker.Start(context.Background(), config.NATS{Listen: l.Addr().String(), DataDir: t.TempDir()}, quiet)
	if err == nil || !strings.Contains(err.Error(), "nats.listen") {
		t.Fatalf("err = %v, want one naming nats.listen", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v to report a busy port", d)
	}
}

func TestAnExternalServerIsUsedWhenURLIsSet(t *testing.T) {
	srv := natstest.RunServer(t, t.TempDir())
	b, err := broker.Start(context.Background(), config.NATS{URL: srv.ClientURL()}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.JS.AccountInfo(context.Background()); err != nil {
		t.Fatalf("jetstream on the external server: %v", err)
	}
	if b.NC.ConnectedUrl() != srv.ClientURL() {
		t.Fatalf("connected to %s, want %s", b.NC.ConnectedUrl(), srv.ClientURL())
	}
}
