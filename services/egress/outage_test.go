package egress

import (
	"context"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// A link whose SMSC is away takes nothing from the stream: its messages wait
// there, not a single attempt spent, and go out once each when it is back.
// The link is two tx_rx sessions (a transmitter and a receiver each), so the
// receipts come back on receivers and are all stored.
func TestALinkThatIsDownLeavesItsMessagesInTheStreamUntilItIsBack(t *testing.T) {
	const n = 100
	e := newEnv(t, smscsim.Options{})
	addr := e.sim.Addr()
	if err := e.sim.Close(); err != nil { // the SMSC is down before the link starts
		t.Fatal(err)
	}
	lo := e.linkOpts(200, 20, 3)
	lo.SMPP.Sessions, lo.SMPP.BindMode = 2, smpplink.BindTXRX
	r := e.run(lo, fastRetries(3))
	e.publish(0, n, nil)

	time.Sleep(2 * time.Second) // the outage: a few rebind attempts fail meanwhile
	if got := e.streamMsgs(streams.Egress); got != n {
		t.Fatalf("SMS_EGRESS holds %d messages during the outage, want all %d", got, n)
	}
	if got := e.streamMsgs(streams.Status); got != 0 {
		t.Fatalf("%d status events during the outage, want 0: no message may be touched", got)
	}
	natstest.Eventually(t, wait, "want sms_links to report 0 of 4 binds up", func() bool { return e.binds(link) == [2]int{0, 4} })

	back, err := smscsim.Start(smscsim.Options{Listen: addr, SystemID: user, Password: passwd})
	if err != nil {
		t.Fatalf("restart the simulator on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = back.Close() })
	natstest.Eventually(t, 2*wait, "want 4 binds (2 transmitters, 2 receivers)", func() bool { return back.Binds() == 4 })
	natstest.Eventually(t, 2*wait, "want every message accepted", func() bool { return back.Accepted() >= n })
	natstest.Eventually(t, wait, "want sms_links to report 4 of 4 binds up", func() bool { return e.binds(link) == [2]int{4, 4} })
	natstest.Eventually(t, wait, "want SMS_EGRESS empty", func() bool { return e.streamMsgs(streams.Egress) == 0 })
	natstest.Eventually(t, wait, "want every receipt stored and acknowledged", func() bool {
		return back.ReceiptsAcked() == n && e.streamMsgs(streams.DLR) == n
	})
	for i := range n {
		if got := back.AcceptedTo(simDst(i)); got != 1 {
			t.Fatalf("%s accepted %d times, want 1", msgID(i), got)
		}
		h := e.history(msgID(i))
		if len(h) != 1 || h[0].Status != status.Submitted || h[0].Attempt != 1 {
			t.Fatalf("%s history %+v, want one submitted event on attempt 1", msgID(i), h)
		}
	}
	if got := r.count(r.m.receipts, lo.Name); got != n {
		t.Fatalf("receipts_stored_total = %v, want %d", got, n)
	}
}

// binds is the link's binds up and wanted as this instance last reported
// them in sms_links; {-1, -1} when there is no report.
func (e *env) binds(name string) [2]int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		e.t.Fatal(err)
	}
	views, err := linkstate.List(ctx, kv, time.Now())
	if err != nil {
		return [2]int{-1, -1}
	}
	for _, v := range views {
		if v.Link == name && len(v.Instances) == 1 {
			return [2]int{v.Instances[0].Binds, v.Instances[0].BindsWanted}
		}
	}
	return [2]int{-1, -1}
}
