package egress

import (
	"context"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// A pool's links share its consumer. When one link's SMSC goes away, the
// other carries the pool alone and nothing is lost; when it comes back, the
// link rebinds and takes its share again.
func TestAPoolKeepsSendingWhenOneLinkIsDownAndTakesItBack(t *testing.T) {
	const n, window2 = 500, 4
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	sim2 := smscsim.NewServer(t, smscsim.Options{SystemID: user, Password: passwd, NoReceipts: true})
	addr2 := sim2.Addr()
	l1 := e.linkOpts(30, 1, 2)
	l2 := e.linkOpts(90, 1, window2)
	l2.Name, l2.SMPP.Name, l2.SMPP.Addr = "l2", "l2", addr2
	e.publish(0, n, nil)
	e.runLinks([]LinkOptions{l1, l2}, fastRetries(20))

	natstest.Eventually(t, wait, "want both links sending", func() bool { return e.sim.Accepted() > 5 && sim2.Accepted() > 15 })
	if err := sim2.Close(); err != nil {
		t.Fatal(err)
	}
	gone := sim2.Accepted()
	at1 := e.sim.Accepted()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, "want l2 reported unbound in sms_links", func() bool {
		views, err := linkstate.List(ctx, kv, time.Now())
		for _, v := range views {
			if err == nil && v.Link == "l2" && len(v.Instances) == 1 {
				return !v.Bound
			}
		}
		return false
	})
	natstest.Eventually(t, wait, "want l1 to carry the pool alone", func() bool { return e.sim.Accepted() >= at1+20 })

	// The SMSC comes back on the same address.
	back, err := smscsim.Start(smscsim.Options{Listen: addr2, SystemID: user, Password: passwd, NoReceipts: true})
	if err != nil {
		t.Fatalf("restart simulator 2 on %s: %v", addr2, err)
	}
	t.Cleanup(func() { _ = back.Close() })
	natstest.Eventually(t, 3*wait, "want l2 to rebind and send again", func() bool { return back.Accepted() > 0 })
	natstest.Eventually(t, 3*wait, "want every message accepted", func() bool {
		for i := range n {
			if e.sim.AcceptedTo(simDst(i))+back.AcceptedTo(simDst(i)) == 0 && !acceptedBy(sim2, i) {
				return false
			}
		}
		return true
	})
	total := e.sim.Accepted() + gone + back.Accepted()
	t.Logf("l1 %d, l2 before the outage %d, l2 after %d; duplicates %d", e.sim.Accepted(), gone, back.Accepted(), total-n)
	// Only submits in flight on l2 when its SMSC vanished can be doubled.
	if total-n > window2 {
		t.Fatalf("%d submits for %d messages: %d duplicates, more than l2's window of %d", total, n, total-n, window2)
	}
}

// acceptedBy reports whether the closed simulator accepted message i.
func acceptedBy(sim *smscsim.Server, i int) bool { return sim.AcceptedTo(simDst(i)) > 0 }
