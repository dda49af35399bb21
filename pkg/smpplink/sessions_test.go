package smpplink_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"go.uber.org/goleak"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

// submitAll sends n submits at once and fails the test on any error.
func submitAll(t *testing.T, l *smpplink.Link, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "hi"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
	}
}

func TestSessionsAreSeveralBindsSharingTheSubmits(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, RespDelay: 100 * time.Millisecond}))
	cfg := config(sim.Addr())
	cfg.Window, cfg.Sessions = 2, 3
	l := open(t, cfg, nil)
	natstest.Eventually(t, wait, "want 3 binds at the simulator", func() bool { return sim.Binds() == 3 })
	if l.Window() != 6 {
		t.Fatalf("Window() = %d, want 2 x 3", l.Window())
	}
	submitAll(t, l, 30)
	if sim.Accepted() != 30 {
		t.Fatalf("simulator accepted %d, want 30", sim.Accepted())
	}
	// One bind dropped: the link stays bound on the other two, and all three
	// come back.
	sim.DropConnections()
	natstest.Eventually(t, wait, "want 3 binds again", func() bool { up, want := l.Binds(); return sim.Binds() == 3 && up == want })
	submitAll(t, l, 12)
	if sim.Accepted() != 42 {
		t.Fatalf("simulator accepted %d, want 42", sim.Accepted())
	}
}

// tx_rx binds a transmitter and a receiver per session; receipts arrive on
// the receiver, and its deliver_sm_resp goes out only after the handler
// returned (stored before acknowledged).
func TestTransmitterAndReceiverPairsSubmitAndReceiveOnSeparateBinds(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	cfg := config(sim.Addr())
	cfg.BindMode, cfg.Sessions = smpplink.BindTXRX, 2
	release := make(chan struct{})
	var mu sync.Mutex
	var got []pdu.Body
	var entered atomic.Int32
	deliver := func(_ context.Context, p pdu.Body) error {
		entered.Add(1)
		<-release
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
		return nil
	}
	l := smpplink.Open(cfg, deliver, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = l.Close() })
	natstest.Eventually(t, wait, "want 4 binds (2 transmitters, 2 receivers)", func() bool {
		up, want := l.Binds()
		return up == 4 && want == 4 && sim.Binds() == 4
	})
	for range 3 {
		if _, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "hi", Receipt: true}); err != nil {
			t.Fatalf("submit: %v", err)
		}
	}
	// Each receiver's store is now held in the handler with a receipt.
	natstest.Eventually(t, wait, "want a receipt in the blocked handler", func() bool { return entered.Load() > 0 })
	time.Sleep(100 * time.Millisecond) // room for a wrong early deliver_sm_resp to reach the SMSC
	if n := sim.ReceiptsAcked(); n != 0 {
		t.Fatalf("%d receipts acknowledged while the handler had not returned, want 0", n)
	}
	close(release)
	natstest.Eventually(t, wait, "want 3 receipts handled and acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3 && sim.ReceiptsAcked() == 3
	})
	if sim.Accepted() != 3 {
		t.Fatalf("accepted %d, want 3", sim.Accepted())
	}
}

func TestALinkBindsOverTLSAndRefusesAnUntrustedCertificate(t *testing.T) {
	srvTLS, caPEM, err := smscsim.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, TLS: srvTLS}))
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []smpplink.BindMode{smpplink.BindTRX, smpplink.BindTXRX} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := config(sim.Addr())
			cfg.BindMode = mode
			if cfg.TLS, err = smpplink.TLSConfig(sim.Addr(), ca, false); err != nil {
				t.Fatal(err)
			}
			l := open(t, cfg, nil)
			if _, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "over tls"}); err != nil {
				t.Fatalf("submit over TLS: %v", err)
			}
			natstest.Eventually(t, wait, "want every bind up", func() bool { up, want := l.Binds(); return up == want })
		})
	}
	if sim.Accepted() != 2 {
		t.Fatalf("accepted %d, want 2", sim.Accepted())
	}

	// Without the CA the certificate is not trusted: never bound, and the
	// reason is in LastError.
	cfg := config(sim.Addr())
	if cfg.TLS, err = smpplink.TLSConfig(sim.Addr(), "", false); err != nil {
		t.Fatal(err)
	}
	l := smpplink.Open(cfg, nil, slog.New(slog.DiscardHandler))
	defer l.Close()
	natstest.Eventually(t, wait, "want a certificate error", func() bool { return l.LastError() != nil })
	if l.Bound() || !strings.Contains(l.LastError().Error(), "certificate") {
		t.Fatalf("bound %v, last error %v; want unbound with a certificate error", l.Bound(), l.LastError())
	}
	if sim.Accepted() != 2 {
		t.Fatalf("accepted %d after the untrusted bind, want 2", sim.Accepted())
	}
}

// Two tx_rx sessions rebind after a drop, and Close leaves no goroutine of
// theirs behind (the link's own receiver included).
func TestTxRxSessionsRebindAndCloseLeavingNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
	cfg := config(sim.Addr())
	cfg.BindMode, cfg.Sessions = smpplink.BindTXRX, 2
	l := smpplink.Open(cfg, func(context.Context, pdu.Body) error { return nil }, slog.New(slog.DiscardHandler))
	allUp := func() bool { up, want := l.Binds(); return up == 4 && want == 4 && sim.Binds() == 4 }
	natstest.Eventually(t, wait, "want 4 binds", allUp)
	sim.DropConnections()
	natstest.Eventually(t, wait, "want 4 binds again after the drop", allUp)
	submitAll(t, l, 8)
	if sim.Accepted() != 8 {
		t.Fatalf("accepted %d, want 8", sim.Accepted())
	}
	_ = l.Close()
	_ = sim.Close()
	goleak.VerifyNone(t, before)
}
