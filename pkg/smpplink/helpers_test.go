package smpplink_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

const (
	user   = "smsflow"
	passwd = "Pw9xQz" // distinctive, so a leak into a log is easy to find
	wait   = 10 * time.Second
)

// creds sets the simulator's credentials to the ones the links use.
func creds(o smscsim.Options) smscsim.Options {
	o.SystemID, o.Password = user, passwd
	return o
}

// config is a link to addr with the test credentials and a fast rebind.
func config(addr string) smpplink.Config {
	return smpplink.Config{Name: "l1", Addr: addr, SystemID: user, Password: passwd,
		Window: 4, RespTimeout: 2 * time.Second, BindInterval: 100 * time.Millisecond}
}

// open opens a link, closes it when the test ends, and waits until it is bound.
func open(t *testing.T, cfg smpplink.Config, log *slog.Logger) *smpplink.Link {
	t.Helper()
	return openDeliver(t, cfg, nil, log)
}

// openDeliver is open with a deliver_sm handler.
func openDeliver(t *testing.T, cfg smpplink.Config, deliver smpplink.Deliver, log *slog.Logger) *smpplink.Link {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := smpplink.Open(cfg, deliver, log)
	t.Cleanup(func() { _ = l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := l.WaitBound(ctx); err != nil {
		t.Fatalf("link not bound within %v: %v (last error %v)", wait, err, l.LastError())
	}
	return l
}
