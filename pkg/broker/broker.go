// Package broker gives the pipeline its NATS connection: to an embedded
// JetStream server, or to an external one when nats.url is set.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/config"
)

// Broker is a NATS connection with JetStream, and the embedded server it
// talks to when there is one.
type Broker struct {
	NC *nats.Conn
	JS jetstream.JetStream

	srv       *server.Server
	log       *slog.Logger
	closeOnce sync.Once
	closeErr  error
}

// Start connects to cfg.URL, or, when it is empty, starts an embedded server
// with JetStream stored in cfg.DataDir and clients accepted on cfg.Listen (so
// the nats CLI can inspect it), and connects to that in process.
func Start(ctx context.Context, cfg config.NATS, log *slog.Logger) (*Broker, error) {
	b := &Broker{log: log}
	opts := []nats.Option{
		nats.Name("smsflow"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	url := cfg.URL
	if url == "" {
		srv, err := startServer(cfg)
		if err != nil {
			return nil, err
		}
		b.srv = srv
		opts = append(opts, nats.InProcessServer(srv))
		url = srv.ClientURL()
		log.Info("embedded nats started", "client_url", url, "data_dir", cfg.DataDir)
	} else {
		if cfg.Creds != "" {
			opts = append(opts, nats.UserCredentials(cfg.Creds))
		}
		if cfg.User != "" {
			opts = append(opts, nats.UserInfo(cfg.User, cfg.Password.Reveal()))
		}
		opts = append(opts, nats.RetryOnFailedConnect(false))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("broker: connect: %w", err)
	}
	b.NC = nc
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("broker: jetstream: %w", err)
	}
	b.JS = js
	if cfg.URL != "" {
		log.Info("connected to nats", "url", nc.ConnectedUrlRedacted())
	}
	return b, nil
}

func startServer(cfg config.NATS) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("broker: nats.listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("broker: nats.listen %q: port: %w", cfg.Listen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// The server only reports a busy port by never becoming ready: check
		// first, so the error says what is wrong at once.
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("broker: nats.listen %s: %w", cfg.Listen, err)
		}
		ln.Close()
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "smsflow",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: embedded server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("broker: embedded server not ready after 30s")
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("broker: embedded server started without JetStream")
	}
	return srv, nil
}

// ClientURL is the URL a client outside the process (the nats CLI) uses.
func (b *Broker) ClientURL() string {
	if b.srv != nil {
		return b.srv.ClientURL()
	}
	return b.NC.ConnectedUrlRedacted()
}

// Close drains the connection (pending publishes are flushed, subscriptions
// finish), then stops the embedded server. It is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		if b.NC != nil {
			done := make(chan struct{})
			b.NC.SetClosedHandler(func(*nats.Conn) { close(done) })
			if err := b.NC.Drain(); err != nil {
				b.NC.Close()
			} else {
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					b.closeErr = errors.New("broker: drain did not finish in 10s")
					b.NC.Close()
				}
			}
		}
		b.shutdownServer()
	})
	return b.closeErr
}

func (b *Broker) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}
