package egress

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/mo"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

func TestEveryMessageIsSubmittedOnceIndexedAndItsReceiptStored(t *testing.T) {
	const n = 20
	e := newEnv(t, smscsim.Options{})
	e.publish(0, n, nil)
	r := e.run(e.linkOpts(100, 10, 4), fastRetries(5))
	natstest.Eventually(t, wait, "want every message accepted", func() bool { return e.acceptedEach(n) })
	natstest.Eventually(t, wait, "want a receipt stored per message", func() bool { return e.streamMsgs(streams.DLR) == n })
	e.acceptedOnce(n)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, streams.BucketDLRIndex)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		subs := e.events(msgID(i), status.Submitted)
		if len(subs) != 1 || subs[0].SMSCID == "" || subs[0].Link != link || subs[0].Parts != 1 || subs[0].Pool != pool {
			t.Fatalf("%s: submitted events %+v, want one with smsc_id, link %s, parts 1, pool %s", msgID(i), subs, link, pool)
		}
		entry, err := kv.Get(ctx, dlr.Key(link, dlr.NormalizeID(subs[0].SMSCID)))
		if err != nil {
			t.Fatalf("%s: no sms_dlr_index entry for %s: %v", msgID(i), subs[0].SMSCID, err)
		}
		var v IndexEntry
		if err := json.Unmarshal(entry.Value(), &v); err != nil || v.ID != msgID(i) || v.Parts != 1 {
			t.Fatalf("index entry of %s = %s, want {id: %s, parts: 1}", subs[0].SMSCID, entry.Value(), msgID(i))
		}
	}
	// Every stored receipt names an SMSC id the index knows: receipts can
	// correlate it.
	dlrs, err := e.js.Stream(ctx, streams.DLR)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= n; seq++ {
		raw, err := dlrs.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("SMS_DLR #%d: %v", seq, err)
		}
		var rec dlr.Record
		if err := json.Unmarshal(raw.Data, &rec); err != nil || raw.Subject != "sms.dlr."+link || rec.ESMClass&0x04 == 0 {
			t.Fatalf("SMS_DLR #%d on %s: %s (%v), want a receipt record on sms.dlr.%s", seq, raw.Subject, raw.Data, err, link)
		}
		if _, err := kv.Get(ctx, dlr.Key(link, dlr.NormalizeID(rec.ReceiptedID))); err != nil {
			t.Fatalf("receipt for %q has no sms_dlr_index entry: %v", rec.ReceiptedID, err)
		}
	}
	if got := r.count(r.m.submits, link, "ok"); got != n {
		t.Fatalf("submits_total{ok} = %v, want %d", got, n)
	}
	if got := r.count(r.m.receipts, link); got != n {
		t.Fatalf("receipts_stored_total = %v, want %d", got, n)
	}
	if got := e.streamMsgs(streams.Egress); got != 0 {
		t.Fatalf("SMS_EGRESS still holds %d messages, want all acked", got)
	}
}

func TestALongMessageIsIndexedUnderEveryPartsSMSCID(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	e.publish(0, 1, func(m *envelope.Message) { m.Text = strings.Repeat("abcd", 100) })
	e.run(e.linkOpts(100, 10, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want the three parts accepted", func() bool { return e.sim.Accepted() == 3 })
	natstest.Eventually(t, wait, "want a submitted event", func() bool {
		return len(e.events(msgID(0), status.Submitted)) == 1
	})
	ev := e.events(msgID(0), status.Submitted)[0]
	ids := strings.Split(ev.SMSCID, ",")
	if ev.Parts != 3 || len(ids) != 3 {
		t.Fatalf("submitted %+v, want 3 parts and 3 smsc ids", ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, streams.BucketDLRIndex)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		entry, err := kv.Get(ctx, dlr.Key(link, dlr.NormalizeID(id)))
		var v IndexEntry
		if err != nil || json.Unmarshal(entry.Value(), &v) != nil || v.ID != msgID(0) || v.Parts != 3 {
			t.Fatalf("index entry of part %s: %v, want {id: %s, parts: 3}", id, err, msgID(0))
		}
	}
}

func TestThrottledSubmitsAreRetriedNotFailed(t *testing.T) {
	const n = 20
	e := newEnv(t, smscsim.Options{MaxPerSecond: 5, NoReceipts: true})
	e.publish(0, n, nil)
	r := e.run(e.linkOpts(20, 5, 4), fastRetries(10))
	natstest.Eventually(t, 3*wait, "want every message accepted", func() bool { return e.acceptedEach(n) })
	e.acceptedOnce(n)
	if e.sim.Throttled() == 0 || r.count(r.m.throttles, link) == 0 {
		t.Fatalf("simulator throttled %d, throttles_total %v: want both > 0 (the link overran)", e.sim.Throttled(), r.count(r.m.throttles, link))
	}
	if got := r.count(r.m.submits, link, "permanent"); got != 0 {
		t.Fatalf("submits_total{permanent} = %v, want 0: throttling must be retried", got)
	}
	t.Logf("throttled %d times for %d messages", e.sim.Throttled(), n)
	for i := range n {
		if f := e.events(msgID(i), status.Failed); len(f) != 0 {
			t.Fatalf("%s failed: %+v", msgID(i), f)
		}
	}
}

func TestAPermanentRefusalFailsTheMessageOnceWithoutRetry(t *testing.T) {
	const n = 5
	refused := simDst(2)
	e := newEnv(t, smscsim.Options{NoReceipts: true, Fail: func(d string, _ int) pdu.Status {
		if d == refused {
			return 0x0B // ESME_RINVDSTADR
		}
		return 0
	}})
	e.publish(0, n, nil)
	r := e.run(e.linkOpts(100, 10, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want the others accepted and the refused one failed", func() bool {
		return e.sim.Accepted() == n-1 && r.count(r.m.final, link, status.Failed) == 1
	})
	failed := e.events(msgID(2), status.Failed)
	if len(failed) != 1 || failed[0].Reason != status.ReasonPermanent || failed[0].Code != 11 {
		t.Fatalf("failed events %+v, want one with reason permanent and code 11", failed)
	}
	// Acked, so gone from the work queue: nothing can redeliver it.
	natstest.Eventually(t, wait, "want SMS_EGRESS empty", func() bool { return e.streamMsgs(streams.Egress) == 0 })
	if e.sim.Rejected() != 1 || len(e.events(msgID(2), status.Retry)) != 0 {
		t.Fatalf("simulator rejected %d submits, want exactly 1: a permanent refusal is not retried", e.sim.Rejected())
	}
	if got := r.count(r.m.submits, link, "permanent"); got != 1 {
		t.Fatalf("submits_total{permanent} = %v, want 1", got)
	}
	for i := range n {
		if i != 2 && e.sim.AcceptedTo(simDst(i)) != 1 {
			t.Fatalf("%s accepted %d times, want 1", msgID(i), e.sim.AcceptedTo(simDst(i)))
		}
	}
}

func TestARetryableRefusalIsRetriedUntilAccepted(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true, Fail: func(_ string, n int) pdu.Status {
		if n <= 2 {
			return 0x08 // ESME_RSYSERR
		}
		return 0
	}})
	e.publish(0, 1, nil)
	r := e.run(e.linkOpts(100, 10, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want the message accepted on its third attempt", func() bool { return e.sim.Accepted() == 1 })
	natstest.Eventually(t, wait, "want its submitted event", func() bool { return len(e.events(msgID(0), status.Submitted)) == 1 })
	if sub := e.events(msgID(0), status.Submitted)[0]; sub.Attempt != 3 {
		t.Fatalf("submitted on attempt %d, want 3", sub.Attempt)
	}
	retries := e.events(msgID(0), status.Retry)
	if len(retries) != 2 || retries[0].Code != 8 {
		t.Fatalf("retry events %+v, want two with code 8", retries)
	}
	if got := r.count(r.m.retries, link); got != 2 {
		t.Fatalf("retries_total = %v, want 2", got)
	}
	if e.sim.Rejected() != 2 {
		t.Fatalf("simulator rejected %d, want 2", e.sim.Rejected())
	}
}

func TestAMessageRefusedOnEveryAttemptFailsAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true, Fail: func(string, int) pdu.Status { return 0x08 }})
	e.publish(0, 1, nil)
	r := e.run(e.linkOpts(100, 10, 2), fastRetries(3))
	natstest.Eventually(t, wait, "want the message failed", func() bool { return r.count(r.m.final, link, status.Failed) == 1 })
	failed := e.events(msgID(0), status.Failed)
	if len(failed) != 1 || failed[0].Reason != status.ReasonMaxAttempts {
		t.Fatalf("failed events %+v, want one with reason max_attempts", failed)
	}
	if e.sim.Rejected() != 3 || e.sim.Accepted() != 0 {
		t.Fatalf("simulator rejected %d accepted %d, want 3 submits, all refused", e.sim.Rejected(), e.sim.Accepted())
	}
	if got := e.streamMsgs(streams.Egress); got != 0 {
		t.Fatalf("SMS_EGRESS still holds %d messages, want the failed one acked", got)
	}
}

func TestAnExpiredMessageIsNeverSubmitted(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	e.publish(0, 1, func(m *envelope.Message) {
		m.AcceptedAt = time.Now().Add(-time.Hour)
		m.TTL = time.Minute
		m.ExpiresAt = m.AcceptedAt.Add(m.TTL)
	})
	e.publish(1, 2, nil)
	r := e.run(e.linkOpts(100, 10, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want the expired message expired and the other sent", func() bool {
		return r.count(r.m.final, link, status.Expired) == 1 && e.sim.Accepted() == 1
	})
	if got := e.events(msgID(0), status.Expired); len(got) != 1 {
		t.Fatalf("expired events %+v, want one", got)
	}
	if e.sim.AcceptedTo(simDst(0)) != 0 {
		t.Fatal("the expired message was submitted")
	}
}

func TestSubmitsArePacedByTheLinkRate(t *testing.T) {
	const n = 40
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	e.publish(0, n, nil)
	e.run(e.linkOpts(20, 1, 4), fastRetries(5))
	natstest.Eventually(t, wait, "want every message accepted", func() bool { return e.sim.Accepted() == n })
	// A bound, not a speed: 20/s with a burst of 1 allows at most 21 in any
	// second (one at each edge).
	if got := e.sim.MaxInWindow(time.Second); got > 21 {
		t.Fatalf("%d submits within one second, want <= 21 at rate 20", got)
	}
}

func TestAnSMSCDisconnectMidRunLosesNothingAndDuplicatesAtMostTheWindow(t *testing.T) {
	const n, window = 200, 8
	e := newEnv(t, smscsim.Options{NoReceipts: true, RespDelay: 30 * time.Millisecond})
	e.publish(0, n, nil)
	r := e.run(e.linkOpts(200, 20, window), fastRetries(10))
	natstest.Eventually(t, wait, "want submits flowing", func() bool { return e.sim.Accepted() >= n/4 })
	e.sim.DropConnections()
	natstest.Eventually(t, 2*wait, "want every message accepted after the drop", func() bool { return e.acceptedEach(n) })
	natstest.Eventually(t, wait, "want SMS_EGRESS empty", func() bool { return e.streamMsgs(streams.Egress) == 0 })
	extra := e.sim.Accepted() - n
	if extra > window {
		t.Fatalf("%d duplicates, want at most the window (%d): only submits in flight at the drop may repeat", extra, window)
	}
	if got := r.count(r.m.duplicatesRisked, link); got < float64(extra) {
		t.Fatalf("duplicates_risked_total = %v, want >= the %d duplicates that happened", got, extra)
	}
	for i := range n {
		if len(e.events(msgID(i), status.Failed)) != 0 {
			t.Fatalf("%s failed", msgID(i))
		}
	}
	t.Logf("duplicates %d, duplicates_risked_total %v", extra, r.count(r.m.duplicatesRisked, link))
}

func TestMOMessagesAreStoredInSMSInboundWithTheirTextDecoded(t *testing.T) {
	e := newEnv(t, smscsim.Options{})
	r := e.run(e.linkOpts(100, 10, 2), fastRetries(5))
	natstest.Eventually(t, wait, "want the link bound", func() bool { return e.sim.Binds() == 1 })
	texts := []string{"STOP", "@£$ €[]{}~\\^| ok", "Děkuji 😀"} // GSM 7-bit with escapes, then UCS-2
	for _, text := range texts {
		if err := e.sim.SendMO("+420600000001", "Eshop", text); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, wait, "want 3 MOs in SMS_INBOUND", func() bool { return e.streamMsgs(streams.Inbound) == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := e.js.Stream(ctx, streams.Inbound)
	if err != nil {
		t.Fatal(err)
	}
	for i, text := range texts {
		raw, err := s.GetMsg(ctx, uint64(i+1))
		if err != nil || raw.Subject != "sms.inbound."+link {
			t.Fatalf("message %d: %v on %q, want sms.inbound.%s", i+1, err, raw.Subject, link)
		}
		var in mo.Message
		if err := json.Unmarshal(raw.Data, &in); err != nil || in.From != "+420600000001" || in.To != "Eshop" || in.Text != text ||
			in.Link != link || in.ReceivedAt.IsZero() || in.Part != nil {
			t.Fatalf("stored MO %s (%v), want from +420600000001, to Eshop, text %q", raw.Data, err, text)
		}
		if want := map[bool]uint8{true: 0, false: 8}[i < 2]; in.DataCoding != want {
			t.Fatalf("%q came with data_coding %d, want %d", text, in.DataCoding, want)
		}
	}
	if e.streamMsgs(streams.DLR) != 0 || r.count(r.m.inbound, link) != 3 {
		t.Fatalf("an MO went to SMS_DLR, or inbound_stored_total = %v, want 3", r.count(r.m.inbound, link))
	}
}

func TestPoisonIsTerminatedAndDoesNotStallTheLink(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.js.Publish(ctx, streams.EgressSubject(pool), []byte("not json"), jetstream.WithMsgID("poison-1")); err != nil {
		t.Fatal(err)
	}
	e.publish(0, 3, nil)
	r := e.run(e.linkOpts(100, 10, 1), fastRetries(5))
	natstest.Eventually(t, wait, "want the good messages sent", func() bool { return e.sim.Accepted() == 3 })
	natstest.Eventually(t, wait, "want the poison terminated", func() bool { return e.streamMsgs(streams.Egress) == 0 })
	if got := r.count(r.m.poison, link); got != 1 {
		t.Fatalf("poison_total = %v, want 1", got)
	}
}

func TestShutdownLeavesUnsentMessagesForTheNextStage(t *testing.T) {
	const n = 30
	e := newEnv(t, smscsim.Options{NoReceipts: true, RespDelay: 50 * time.Millisecond})
	e.publish(0, n, nil)
	opts := fastRetries(5)
	opts.Grace = 2 * time.Second
	r := e.run(e.linkOpts(10, 1, 4), opts)
	natstest.Eventually(t, wait, "want some messages sent", func() bool { return e.sim.Accepted() >= 5 })
	start := time.Now()
	r.stop()
	t.Logf("Run returned %v after cancel", time.Since(start))
	sent := e.sim.Accepted()
	if sent >= n {
		t.Fatalf("all %d sent before the shutdown; the test needs some left", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cons, err := e.js.Consumer(ctx, streams.Egress, streams.EgressConsumerName(pool))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left := int(info.NumPending) + info.NumAckPending; left != n-sent {
		t.Fatalf("pending %d + ack pending %d = %d, want the %d not sent", info.NumPending, info.NumAckPending, left, n-sent)
	}

	e.run(e.linkOpts(100, 10, 4), opts)
	natstest.Eventually(t, wait, "want the rest sent by the next stage", func() bool { return e.acceptedEach(n) })
	natstest.Eventually(t, wait, "want SMS_EGRESS empty", func() bool { return e.streamMsgs(streams.Egress) == 0 })
	if got := e.sim.Accepted(); got != n {
		t.Fatalf("simulator accepted %d in all, want %d: a message in flight at shutdown was lost or doubled", got, n)
	}
}
