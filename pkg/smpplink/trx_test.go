package smpplink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

// receiptID is the SMSC message id a delivery receipt is about.
func receiptID(p pdu.Body) string {
	f := p.TLVFields()[pdutlv.TagReceiptedMessageID]
	if f == nil {
		return ""
	}
	return strings.TrimRight(string(f.Bytes()), "\x00")
}

// store is a deliver_sm handler that blocks until release is closed and
// records, per receipt, how often it was stored. At each return it checks
// that the SMSC has not acknowledged more receipts than had returned before
// this one: a deliver_sm_resp going out before its handler returned would
// show up there.
type store struct {
	sim     *smscsim.Server
	release chan struct{}
	fail    func(id string, call int) error // nil: always stored

	mu       sync.Mutex
	entered  int
	returned int
	calls    map[string]int
	stored   map[string]int
	early    []string
}

func newStore(sim *smscsim.Server) *store {
	return &store{sim: sim, release: make(chan struct{}), calls: map[string]int{}, stored: map[string]int{}}
}

func (s *store) deliver(_ context.Context, p pdu.Body) error {
	id := receiptID(p)
	s.mu.Lock()
	s.entered++
	s.calls[id]++
	call := s.calls[id]
	s.mu.Unlock()
	<-s.release
	var err error
	if s.fail != nil {
		err = s.fail(id, call)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if acked := s.sim.ReceiptsAcked(); acked > s.returned {
		s.early = append(s.early, fmt.Sprintf("%d receipts acknowledged when %d handlers had returned", acked, s.returned))
	}
	s.returned++
	if err == nil {
		s.stored[id]++
	}
	return err
}

// checkStoredOnce fails unless every id in ids was stored exactly once and
// nothing else was, and no acknowledgement came early.
func (s *store) checkStoredOnce(t *testing.T, ids []string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.early) > 0 {
		t.Errorf("deliver_sm_resp before the handler returned: %v", s.early)
	}
	for _, id := range ids {
		if s.stored[id] != 1 {
			t.Errorf("receipt of %s stored %d times, want 1", id, s.stored[id])
		}
	}
	if len(s.stored) != len(ids) {
		t.Errorf("%d receipts stored, want %d", len(s.stored), len(ids))
	}
}

// submitN submits n messages asking for receipts, to numbers from first
// on, window-many at a time, and fails on any error; it returns the SMSC ids.
func submitN(t *testing.T, l *smpplink.Link, first, n int) []string {
	t.Helper()
	var mu sync.Mutex
	var ids []string
	var errs []error
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: fmt.Sprintf("+4206%08d", first+i), Text: "hi", Receipt: true})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ids = append(ids, r.IDs...)
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d submits failed, first: %v", len(errs), n, errs[0])
	}
	return ids
}

// In trx mode a receipt that takes long to store (NATS away) holds only the
// receipts behind it: the submit_sm_resps still come in, for submits made
// before and after the handler blocked, although it stays blocked for more
// than the response timeout. No submit times out or goes twice, no receipt
// is acknowledged before it is stored, and once the store is back every
// receipt is stored exactly once.
func TestATrxLinkReadsSubmitRespsWhileAReceiptIsBeingStored(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	s := newStore(sim)
	cfg := config(sim.Addr())
	cfg.Window, cfg.RespTimeout = 8, time.Second
	cfg.DeliverStorers = 1 // one receipt in the blocked handler, the others queued
	l := openDeliver(t, cfg, s.deliver, nil)

	const n = 40
	ids := submitN(t, l, 0, n/2)
	natstest.Eventually(t, wait, "want the first receipt in the blocked handler", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.entered > 0
	})
	// Blocked for longer than the response timeout, then more submits.
	time.Sleep(cfg.RespTimeout + 500*time.Millisecond)
	ids = append(ids, submitN(t, l, n/2, n/2)...)
	time.Sleep(100 * time.Millisecond) // room for a wrong early deliver_sm_resp to reach the SMSC
	s.mu.Lock()
	entered := s.entered
	s.mu.Unlock()
	if entered != 1 || sim.ReceiptsAcked() != 0 {
		t.Fatalf("while the store is blocked: %d handlers entered, %d receipts acknowledged; want 1 and 0", entered, sim.ReceiptsAcked())
	}
	if len(ids) != n || sim.Accepted() != n || sim.Duplicates() != 0 {
		t.Fatalf("%d ids, %d accepted, %d duplicates; want %d, %d, 0", len(ids), sim.Accepted(), sim.Duplicates(), n, n)
	}

	close(s.release)
	natstest.Eventually(t, wait, fmt.Sprintf("want %d receipts acknowledged", n), func() bool { return sim.ReceiptsAcked() == n })
	time.Sleep(100 * time.Millisecond) // room for a receipt handled twice
	s.checkStoredOnce(t, ids)
	if sim.Accepted() != n {
		t.Fatalf("accepted %d, want %d", sim.Accepted(), n)
	}
}

// A receipt the handler could not store is answered ESME_RX_T_APPN and the
// SMSC sends it again; so is one that finds the queue full. Each is stored
// once in the end.
func TestAReceiptNotStoredOrNotQueuedIsRefusedAndComesAgain(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{ReceiptRetry: 100 * time.Millisecond}))
	s := newStore(sim)
	s.fail = func(id string, call int) error {
		if call == 1 {
			return errors.New("nats: no responders") // the first attempt of each fails
		}
		return nil
	}
	cfg := config(sim.Addr())
	cfg.DeliverQueue, cfg.DeliverStorers = 2, 1
	l := openDeliver(t, cfg, s.deliver, nil)
	const n = 10
	ids := submitN(t, l, 0, n)
	// One receipt in the handler, two queued, the others refused: the queue
	// was full.
	natstest.Eventually(t, wait, "want receipts refused for a full queue", func() bool { return sim.ReceiptsRefused() >= n-3 })
	if sim.ReceiptsAcked() != 0 {
		t.Fatalf("%d receipts acknowledged while the store is blocked, want 0", sim.ReceiptsAcked())
	}
	close(s.release)
	natstest.Eventually(t, wait, fmt.Sprintf("want %d receipts acknowledged", n), func() bool { return sim.ReceiptsAcked() == n })
	time.Sleep(200 * time.Millisecond) // room for a receipt handled twice
	s.checkStoredOnce(t, ids)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.calls[id] < 2 {
			t.Errorf("receipt of %s handled %d times, want at least 2 (its first store failed)", id, s.calls[id])
		}
	}
}

// A bind stores DeliverStorers receipts at once (one publish at a time
// capped a bind below what a 2,000/s link receives), and answers none of
// them before its own store returns. (One sender's keep their order:
// services/egress TestMOMessagesAreStoredInSMSInboundWithTheirTextDecoded.)
func TestABindStoresSeveralReceiptsAtOnce(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	s := newStore(sim)
	cfg := config(sim.Addr())
	cfg.Window, cfg.DeliverStorers = 8, 4
	l := openDeliver(t, cfg, s.deliver, nil)
	// Receipts go to a storer by their source (each a different recipient
	// here): 40 leave one of 4 storers without any once in 25,000 runs.
	const n = 40
	ids := submitN(t, l, 0, n)
	natstest.Eventually(t, wait, "want 4 receipts in the blocked handler at once", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.entered == 4
	})
	time.Sleep(100 * time.Millisecond) // room for a fifth, or an early answer
	s.mu.Lock()
	entered := s.entered
	s.mu.Unlock()
	if entered != 4 || sim.ReceiptsAcked() != 0 {
		t.Fatalf("while the store is blocked: %d handlers entered, %d receipts acknowledged; want 4 and 0", entered, sim.ReceiptsAcked())
	}
	close(s.release)
	natstest.Eventually(t, wait, fmt.Sprintf("want %d receipts acknowledged", n), func() bool { return sim.ReceiptsAcked() == n })
	time.Sleep(100 * time.Millisecond) // room for a receipt handled twice
	s.checkStoredOnce(t, ids)
}
