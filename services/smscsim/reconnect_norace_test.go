//go:build !race

package smscsim_test

import (
	"testing"
	"time"

	"github.com/smsflow/smsflow/services/smscsim"
)

// TestGoSMPPReconnectGetsPendingReceipts lets go-smpp's Transceiver reconnect by itself after
// DropConnections and expects the receipts that came due meanwhile. It is built without -race
// only: go-smpp's reconnect writes client.inbox while the previous session's reader still reads
// it (client.go:129 vs :226), a race in the library, not in the simulator.
func TestGoSMPPReconnectGetsPendingReceipts(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{ReceiptDelay: 300 * time.Millisecond}))
	in := &inbox{}
	tc := connect(t, sim.Addr(), in) // BindInterval 100 ms
	ids := map[string]bool{}
	for range 3 {
		resp, err := tc.Submit(sm("smsflow", "+420111", "x"))
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		ids[resp.RespID()] = true
	}
	sim.DropConnections()
	eventually(t, wait, "want the client rebound", func() bool { return sim.Binds() == 1 })
	eventually(t, wait, "want 3 receipts acked after rebind", func() bool { return sim.ReceiptsAcked() == 3 })
	for id := range ids {
		if in.receiptsByID()[id] == nil {
			t.Fatalf("no receipt for %s", id)
		}
	}
}
