package receipts

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

func TestPartsOutcome(t *testing.T) {
	d := func(seq int) partState { return partState{State: dlr.Delivered, SMSCID: "d", Seq: seq} }
	u := func(seq int) partState { return partState{State: dlr.Undelivered, Err: "005", SMSCID: "u", Seq: seq} }
	x := func(seq int) partState { return partState{State: dlr.Expired, SMSCID: "x", Seq: seq} }
	r := func(seq int) partState { return partState{State: dlr.Rejected, SMSCID: "r", Seq: seq} }
	for _, tc := range []struct {
		name  string
		rec   partsRecord
		want  string // "" when not final
		wantB string // the deciding part's smsc id
	}{
		{"no part in yet is not final", partsRecord{Parts: 3}, "", ""},
		{"two of three delivered is not final", partsRecord{Parts: 3, Done: map[string]partState{"1": d(1), "2": d(2)}}, "", ""},
		{"three of three delivered is delivered", partsRecord{Parts: 3, Done: map[string]partState{"1": d(1), "2": d(2), "3": d(3)}}, status.Delivered, "d"},
		{"one undelivered part makes it undelivered at once", partsRecord{Parts: 3, Done: map[string]partState{"2": u(1)}}, status.Undelivered, "u"},
		{"a rejected part is undelivered", partsRecord{Parts: 3, Done: map[string]partState{"1": d(1), "3": r(2)}}, status.Undelivered, "r"},
		{"an expired part makes it expired", partsRecord{Parts: 2, Done: map[string]partState{"1": x(1)}}, status.Expired, "x"},
		{"the first failed part decides, whatever comes after", partsRecord{Parts: 3, Done: map[string]partState{"1": x(2), "2": u(1), "3": d(3)}}, status.Undelivered, "u"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, by, final := tc.rec.outcome()
			if st != tc.want || final != (tc.want != "") || by.SMSCID != tc.wantB {
				t.Fatalf("outcome = %q by %q (final %v), want %q by %q", st, by.SMSCID, final, tc.want, tc.wantB)
			}
		})
	}
}

// indexedParts writes the sms_dlr_index entries egress writes for a message
// of len(smscIDs) parts.
func (h *harness) indexedParts(msgID string, smscIDs ...string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i, sid := range smscIDs {
		v, _ := json.Marshal(dlr.IndexEntry{ID: msgID, Parts: len(smscIDs), Part: i + 1})
		if _, err := h.index.Put(ctx, dlr.Key(link, dlr.NormalizeID(sid)), v); err != nil {
			h.t.Fatalf("index %s: %v", sid, err)
		}
	}
}

func (h *harness) parts(result string) float64 {
	return testutil.ToFloat64(h.m.parts.WithLabelValues(result))
}

func TestALongMessageIsDeliveredWhenAllItsPartsAre(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000LONG"
	h.indexedParts(id, "p1", "p2", "p3")
	h.receipt(dlr.Record{Text: text("p1", "DELIVRD", "000")})
	h.receipt(dlr.Record{Text: text("p2", "DELIVRD", "000")})
	h.waitCount("part", 2)
	h.drained()
	if evs := h.history(id); len(evs) != 0 {
		t.Fatalf("events after 2 of 3 parts = %+v, want none", evs)
	}
	// A redelivered receipt of a part already in (the SMSC sent it twice)
	// must not count as the third part.
	h.receipt(dlr.Record{ReceiptedID: "P2", MessageState: 2})
	h.until("want parts_total{result=duplicate} = 1", func() bool { return h.parts("duplicate") == 1 })
	h.drained()
	if evs := h.history(id); len(evs) != 0 {
		t.Fatalf("events after a repeated part = %+v, want none", evs)
	}
	h.receipt(dlr.Record{Text: text("p3", "DELIVRD", "000")})
	h.waitCount(status.Delivered, 1)
	h.drained()
	ev := h.onlyTerminal(id)
	if ev.Status != status.Delivered || ev.Parts != 3 || ev.Detail != "stat:DELIVRD parts:3/3" {
		t.Fatalf("event = %+v, want delivered, parts 3, detail stat:DELIVRD parts:3/3", ev)
	}
	if r, d, p := h.parts("recorded"), h.parts("duplicate"), h.count("part"); r != 3 || d != 1 || p != 3 {
		t.Fatalf("parts recorded %v, duplicate %v, processed part %v; want 3, 1, 3", r, d, p)
	}
	if n := len(h.history(id)); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

func TestALongMessageIsUndeliveredAsSoonAsOnePartIs(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000UNDL"
	h.indexedParts(id, "q1", "q2", "q3")
	h.receipt(dlr.Record{Text: text("q1", "DELIVRD", "000")})
	h.waitCount("part", 1)
	h.receipt(dlr.Record{Text: text("q2", "UNDELIV", "005")})
	h.waitCount(status.Undelivered, 1)
	h.drained()
	ev := h.onlyTerminal(id)
	if ev.Status != status.Undelivered || ev.Code != 5 || ev.SMSCID != "q2" || ev.Parts != 3 {
		t.Fatalf("event = %+v, want undelivered code 5 from part q2 of 3", ev)
	}
	// The last part's receipt comes after the message is final.
	h.receipt(dlr.Record{Text: text("q3", "DELIVRD", "000")})
	h.waitCount("duplicate", 1)
	h.drained()
	if ev := h.onlyTerminal(id); ev.Status != status.Undelivered {
		t.Fatalf("status = %s, want undelivered to stay", ev.Status)
	}
	if r, d := h.parts("recorded"), h.count(status.Delivered); r != 3 || d != 0 {
		t.Fatalf("parts recorded %v, delivered %v; want 3, 0", r, d)
	}
}

func TestAnExpiredPartExpiresTheMessage(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000EXPD"
	h.indexedParts(id, "r1", "r2")
	h.receipt(dlr.Record{ReceiptedID: "r2", MessageState: 3})
	h.waitCount(status.Expired, 1)
	h.drained()
	if ev := h.onlyTerminal(id); ev.Status != status.Expired || ev.SMSCID != "r2" {
		t.Fatalf("event = %+v, want expired from part r2", ev)
	}
}

// Entries written before parts were numbered (Part 0) are told apart by
// their SMSC ids, so the parts still add up.
func TestIndexEntriesWithoutPartNumbersAreCountedBySMSCID(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000OLDP"
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, sid := range []string{"o1", "o2"} {
		if _, err := h.index.Put(ctx, dlr.Key(link, sid), []byte(`{"id":"`+id+`","parts":2}`)); err != nil {
			t.Fatal(err)
		}
	}
	h.receipt(dlr.Record{Text: text("o1", "DELIVRD", "000")})
	h.receipt(dlr.Record{Text: text("o1", "DELIVRD", "000")})
	h.waitCount("part", 2) // each receipt of a part not yet deciding the message
	h.until("want parts_total{result=duplicate} = 1", func() bool { return h.parts("duplicate") == 1 })
	h.receipt(dlr.Record{Text: text("o2", "DELIVRD", "000")})
	h.waitCount(status.Delivered, 1)
	h.drained()
	h.onlyTerminal(id)
}

// Many receipts of one message's parts at once (the stage handles 8 at a
// time): the compare-and-set keeps every part, and one status results.
func TestPartsArrivingTogetherAreAllCounted(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000MANY"
	const n = 20
	sids := make([]string, n)
	for i := range sids {
		sids[i] = "m" + string(rune('a'+i))
	}
	h.indexedParts(id, sids...)
	for _, sid := range sids {
		h.receipt(dlr.Record{Text: text(sid, "DELIVRD", "000")})
	}
	h.waitCount(status.Delivered, 1)
	h.drained()
	if r, p := h.parts("recorded"), h.count("part"); r != n || p != n-1 {
		t.Fatalf("parts recorded %v, processed part %v; want %d, %d", r, p, n, n-1)
	}
	h.onlyTerminal(id)
}

// until waits (bounded) for cond.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	natstest.Eventually(h.t, wait, what, cond)
}

// A crash after the last part was recorded and before the status was
// published: the redelivered receipt finds its part in, counts it as a
// duplicate part, and still publishes the status.
func TestAPartRecordedBeforeACrashStillGivesTheStatus(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000CRSH"
	h.indexedParts(id, "k1", "k2")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, streams.BucketReceiptParts)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(partsRecord{Parts: 2, Done: map[string]partState{
		"1": {State: dlr.Delivered, Stat: "DELIVRD", SMSCID: "k1", Seq: 1},
		"2": {State: dlr.Delivered, Stat: "DELIVRD", SMSCID: "k2", Seq: 2},
	}})
	if _, err := kv.Put(ctx, partsKey(id), rec); err != nil {
		t.Fatal(err)
	}
	h.receipt(dlr.Record{Text: text("k2", "DELIVRD", "000")})
	h.waitCount(status.Delivered, 1)
	h.drained()
	if r, d := h.parts("recorded"), h.parts("duplicate"); r != 0 || d != 1 {
		t.Fatalf("parts recorded %v, duplicate %v; want 0, 1", r, d)
	}
	if ev := h.onlyTerminal(id); ev.Status != status.Delivered || ev.Detail != "stat:DELIVRD parts:2/2" {
		t.Fatalf("event = %+v, want delivered, parts 2/2", ev)
	}
}
