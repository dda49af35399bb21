package smscsim_test

import (
	"sync"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutext"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

const (
	user   = "smsflow"
	passwd = "s3cret-pw"
	wait   = 10 * time.Second // bound on every wait; the happy path takes milliseconds
)

// eventually polls cond every 10 ms and fails the test with what if it is not true within d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("not within %v: %s", d, what)
		case <-tick.C:
		}
	}
}

// inbox collects the deliver_sm a client's Handler sees.
type inbox struct {
	mu   sync.Mutex
	pdus []pdu.Body
	// block, when set, is called in the handler before the PDU is recorded; go-smpp sends the
	// deliver_sm_resp only after the handler returns.
	block func(p pdu.Body)
}

func (in *inbox) handle(p pdu.Body) {
	if p.Header().ID != pdu.DeliverSMID {
		return
	}
	if in.block != nil {
		in.block(p)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.pdus = append(in.pdus, p)
}

func (in *inbox) all() []pdu.Body {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]pdu.Body(nil), in.pdus...)
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.pdus)
}

// receiptsByID returns the receipts seen, by receipted_message_id (the last copy wins).
func (in *inbox) receiptsByID() map[string]pdu.Body {
	out := map[string]pdu.Body{}
	for _, p := range in.all() {
		if f := p.TLVFields()[pdutlv.TagReceiptedMessageID]; f != nil {
			out[f.String()] = p
		}
	}
	return out
}

// awaitStatus waits for a status of the client's Bind channel and fails the test unless it is want.
func awaitStatus(t testing.TB, st <-chan smpp.ConnStatus, want smpp.ConnStatusID) smpp.ConnStatus {
	t.Helper()
	select {
	case s := <-st:
		if s.Status() != want {
			t.Fatalf("bind status = %v (err %v), want %v", s.Status(), s.Error(), want)
		}
		return s
	case <-time.After(wait):
		t.Fatalf("no bind status within %v, want %v", wait, want)
	}
	return nil
}

// transceiver binds a go-smpp Transceiver to addr and closes it in t.Cleanup.
// It reconnects after bindInterval.
func transceiver(t testing.TB, addr, u, pw string, in *inbox, bindInterval time.Duration) (*smpp.Transceiver, <-chan smpp.ConnStatus) {
	t.Helper()
	tc := &smpp.Transceiver{
		Addr: addr, User: u, Passwd: pw,
		Handler:      in.handle,
		BindInterval: bindInterval,
		RespTimeout:  2 * time.Second,
	}
	st := tc.Bind()
	t.Cleanup(func() { _ = tc.Close() })
	return tc, st
}

// connect binds a Transceiver with good credentials and waits until it is Connected.
func connect(t testing.TB, addr string, in *inbox) *smpp.Transceiver {
	t.Helper()
	tc, st := transceiver(t, addr, user, passwd, in, 100*time.Millisecond)
	awaitStatus(t, st, smpp.Connected)
	return tc
}

func sm(src, dst, text string) *smpp.ShortMessage {
	return &smpp.ShortMessage{Src: src, Dst: dst, Text: pdutext.Raw(text), Register: pdufield.FinalDeliveryReceipt}
}
