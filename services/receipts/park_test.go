package receipts

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/status"
)

var parking = Options{ParkAfter: 200 * time.Millisecond, RecheckEvery: time.Second, OrphanAfter: 3 * time.Second,
	BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}

// A receipt whose index entry is late by more than ParkAfter waits in
// SMS_RECEIPT_TIMERS, not in the consumer, and is matched once the entry is there.
func TestAReceiptWaitingLongForItsIndexIsParkedAndMatchedLater(t *testing.T) {
	t.Parallel()
	h := start(t, parking)
	const id = "01JMSG0000000000000000PARK"
	h.receipt(dlr.Record{Text: text("pk1", "DELIVRD", "000")})
	h.until("want the receipt parked", func() bool { return testutil.ToFloat64(h.m.parked) >= 1 })
	h.drained() // nothing held by the receipts consumer while it waits
	h.indexed("pk1", id)
	h.waitCount(status.Delivered, 1)
	if ev := h.onlyTerminal(id); ev.Status != status.Delivered || ev.SMSCID != "pk1" {
		t.Fatalf("event = %+v, want delivered for pk1", ev)
	}
	if o, s := h.count("orphan"), testutil.ToFloat64(h.m.states.WithLabelValues("delivered")); o != 0 || s != 1 {
		t.Fatalf("orphans %v, states_total{delivered} %v; want 0 and 1 (a recheck is not a new receipt)", o, s)
	}
}

// A parked receipt whose entry never comes is an orphan OrphanAfter after it
// was first received, not after it was parked.
func TestAParkedReceiptBecomesAnOrphanOnTime(t *testing.T) {
	t.Parallel()
	h := start(t, parking)
	began := time.Now()
	h.receipt(dlr.Record{Text: text("pk2", "DELIVRD", "000")})
	h.waitCount("orphan", 1)
	if d := time.Since(began); d < parking.OrphanAfter {
		t.Fatalf("orphaned after %v, want no sooner than %v", d, parking.OrphanAfter)
	}
	if n := testutil.ToFloat64(h.m.parked); n < 2 {
		t.Fatalf("parked %v times, want at least 2 (every second for 3s)", n)
	}
	h.drained()
}
