package smpplink_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
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
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := smpplink.Open(cfg, nil, log)
	t.Cleanup(func() { _ = l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := l.WaitBound(ctx); err != nil {
		t.Fatalf("link not bound within %v: %v (last error %v)", wait, err, l.LastError())
	}
	return l
}

// logBuffer is a bytes.Buffer safe for the link's goroutines to log into
// while the test reads it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
