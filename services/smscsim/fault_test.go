package smscsim_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"go.uber.org/goleak"

	"github.com/smsflow/smsflow/services/smscsim"
)

// TestReceiptInFlightWhenConnectionDropsIsResentAfterRebind holds the client's handler on the
// receipt (so its deliver_sm_resp never leaves), drops the connection, and expects the receipt
// again on the next bind, acked exactly once.
//
// The rebind is a fresh go-smpp client: go-smpp's own reconnect races on client.inbox (its
// client.go:129 vs :226) and fails -race; reconnect_norace_test.go covers it without -race.
func TestReceiptInFlightWhenConnectionDropsIsResentAfterRebind(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	entered, release := make(chan struct{}), make(chan struct{})
	first := &inbox{block: func(pdu.Body) { // runs on go-smpp's single reader goroutine
		close(entered)
		select {
		case <-release:
		case <-time.After(wait):
		}
	}}
	tc, st := transceiver(t, sim.Addr(), user, passwd, first, time.Hour) // no reconnect, see above
	awaitStatus(t, st, smpp.Connected)
	resp, err := tc.Submit(sm("smsflow", "+420111", "hello"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("receipt never reached the handler")
	}
	sim.DropConnections()
	if n := sim.Binds(); n != 0 {
		t.Fatalf("Binds = %d right after DropConnections, want 0", n)
	}
	close(release) // the deliver_sm_resp now meets a closed connection
	_ = tc.Close()
	if n := sim.ReceiptsAcked(); n != 0 {
		t.Fatalf("ReceiptsAcked = %d before any deliver_sm_resp arrived, want 0", n)
	}

	second := &inbox{}
	connect(t, sim.Addr(), second)
	eventually(t, wait, "want the receipt acked after rebind", func() bool { return sim.ReceiptsAcked() == 1 })
	for name, in := range map[string]*inbox{"first": first, "second": second} {
		if in.receiptsByID()[resp.RespID()] == nil || in.len() != 1 {
			t.Fatalf("%s bind saw %d deliver_sm, want the receipt of %s once", name, in.len(), resp.RespID())
		}
	}
}

func TestReceiptsWaitForAReceiverOfTheSameSystemID(t *testing.T) {
	sim := smscsim.NewServer(t, smscsim.Options{Password: passwd}) // any system_id
	tx := &smpp.Transmitter{Addr: sim.Addr(), User: user, Passwd: passwd, RespTimeout: 2 * time.Second}
	st := tx.Bind()
	t.Cleanup(func() { _ = tx.Close() })
	awaitStatus(t, st, smpp.Connected)
	resp, err := tx.Submit(sm("smsflow", "+420111", "x"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if err := sim.SendMO("+420111", "smsflow", "hi"); !errors.Is(err, smscsim.ErrNoReceiver) {
		t.Fatalf("SendMO with only a transmitter bound = %v, want ErrNoReceiver", err)
	}

	other := &inbox{}
	otherRx := &smpp.Receiver{Addr: sim.Addr(), User: "someone-else", Passwd: passwd, Handler: other.handle}
	t.Cleanup(func() { _ = otherRx.Close() })
	awaitStatus(t, otherRx.Bind(), smpp.Connected)

	in := &inbox{}
	rx := &smpp.Receiver{Addr: sim.Addr(), User: user, Passwd: passwd, Handler: in.handle}
	t.Cleanup(func() { _ = rx.Close() })
	awaitStatus(t, rx.Bind(), smpp.Connected)
	eventually(t, wait, "want the receipt acked by the receiver", func() bool { return sim.ReceiptsAcked() == 1 })
	// go-smpp's Receiver answers deliver_sm_resp before it calls the Handler.
	eventually(t, wait, "want the receipt at the receiver's handler", func() bool { return in.receiptsByID()[resp.RespID()] != nil })
	if n := other.len(); n != 0 {
		t.Fatalf("a receiver of another system_id got %d deliver_sm, want 0", n)
	}
	if n := sim.Binds(); n != 3 {
		t.Fatalf("Binds = %d, want 3", n)
	}
}

func TestSendMOArrivesWithESMClass0(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	if err := sim.SendMO("+420111", "1234", "STOP"); !errors.Is(err, smscsim.ErrNoReceiver) {
		t.Fatalf("SendMO with nobody bound = %v, want ErrNoReceiver", err)
	}
	in := &inbox{}
	connect(t, sim.Addr(), in)
	if err := sim.SendMO("+420777000111", "1234", "STOP"); err != nil {
		t.Fatalf("SendMO: %v", err)
	}
	eventually(t, wait, "want the MO at the handler", func() bool { return in.len() == 1 })
	f := in.all()[0].Fields()
	if esm := f[pdufield.ESMClass].Raw().(uint8); esm != 0 {
		t.Fatalf("esm_class = %#x, want 0", esm)
	}
	if got := [3]string{f[pdufield.SourceAddr].String(), f[pdufield.DestinationAddr].String(), f[pdufield.ShortMessage].String()}; got != [3]string{"+420777000111", "1234", "STOP"} {
		t.Fatalf("MO src/dst/text = %q", got)
	}
	if n := sim.ReceiptsAcked(); n != 0 {
		t.Fatalf("ReceiptsAcked = %d after an MO, want 0", n)
	}
}

func TestCloseIsIdempotentAndLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	sim, err := smscsim.Start(creds(smscsim.Options{ReceiptDelay: time.Hour, RespDelay: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	in := &inbox{}
	tc := &smpp.Transceiver{Addr: sim.Addr(), User: user, Passwd: passwd, Handler: in.handle, BindInterval: 100 * time.Millisecond}
	awaitStatus(t, tc.Bind(), smpp.Connected)
	if _, err := tc.Submit(sm("smsflow", "+420111", "x")); err != nil { // leaves a receipt timer running
		t.Fatalf("submit: %v", err)
	}
	go func() { _, _ = tc.Submit(sm("smsflow", "+420111", "y")) }() // in RespDelay during Close
	if err := sim.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := sim.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	_ = tc.Close()
}

func TestDropEveryDropsTheConnectionsAfterEveryNthAcceptedSubmitWithoutItsResponse(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, DropEvery: 2}))
	// A new transceiver after the drop: go-smpp's own rebind races (see reconnect_norace_test.go).
	tc, st := transceiver(t, sim.Addr(), user, passwd, &inbox{}, time.Hour)
	awaitStatus(t, st, smpp.Connected)
	if _, err := tc.Submit(sm("a", "420600000001", "one")); err != nil {
		t.Fatalf("first submit: %v", err)
	}
	if _, err := tc.Submit(sm("a", "420600000002", "two")); err == nil {
		t.Fatal("the second submit got a response, want the connection dropped before it")
	}
	awaitStatus(t, st, smpp.Disconnected)
	tc = connect(t, sim.Addr(), &inbox{})
	if _, err := tc.Submit(sm("a", "420600000002", "two")); err != nil {
		t.Fatalf("the second submit again: %v", err)
	}
	if sim.Accepted() != 3 || sim.Drops() != 1 || sim.Duplicates() != 1 {
		t.Fatalf("accepted %d, drops %d, duplicates %d; want 3, 1, 1", sim.Accepted(), sim.Drops(), sim.Duplicates())
	}
}
