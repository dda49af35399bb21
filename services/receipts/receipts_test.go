package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

const (
	link = "sim1"
	wait = 10 * time.Second // bound on every wait; the happy path takes milliseconds
)

// harness is one running receipts stage against its own JetStream server.
type harness struct {
	t     testing.TB // the (sub)test that fails when a helper does; table cases share a harness and set it
	nc    *nats.Conn
	js    jetstream.JetStream
	index jetstream.KeyValue
	pub   *status.Publisher
	m     *Metrics
	terms atomic.Int64 // MSG_TERMINATED advisories of the receipts consumer
	stop  func()       // stops the running stage
	// timeout is the running stage's receipt timeout, which egress would
	// arm with (submitted).
	timeout time.Duration
}

// start runs the stage until the test ends; the cleanup cancels it and checks
// that Run returns nil.
func start(t testing.TB, opts Options) *harness {
	t.Helper()
	nc, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatalf("apply streams: %v", err)
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BucketDLRIndex)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, nc: nc, js: js, index: kv, pub: pub}
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."+streams.DLR+"."+streams.ConsumerReceipts,
		func(*nats.Msg) { h.terms.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	h.run(opts)
	return h
}

// run starts a stage (a new instance, as after a restart) with fresh metrics.
func (h *harness) run(opts Options) {
	h.timeout = opts.ReceiptTimeout
	h.m = NewMetrics(prometheus.NewRegistry())
	s := New(h.js, h.pub, opts, slog.New(slog.DiscardHandler), h.m)
	h.stop = natstest.Run(h.t, wait, s.Run)
}

// indexed writes the sms_dlr_index entry egress writes after a submit.
func (h *harness) indexed(smscID, msgID string) { h.indexedAfter(smscID, msgID, 0) }

// indexedAfter is indexed with the sequence of the message's submitted
// event in the entry (0: none).
func (h *harness) indexedAfter(smscID, msgID string, statusSeq uint64) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	v, _ := json.Marshal(dlr.IndexEntry{ID: msgID, Parts: 1, StatusSeq: statusSeq})
	if _, err := h.index.Put(ctx, dlr.Key(link, dlr.NormalizeID(smscID)), v); err != nil {
		h.t.Fatalf("index %s: %v", smscID, err)
	}
}

// receipt stores r on sms.dlr.<link>, as egress does on deliver_sm.
func (h *harness) receipt(r dlr.Record) {
	h.t.Helper()
	if r.Link == "" {
		r.Link = link
	}
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = time.Now().UTC()
	}
	if r.ESMClass == 0 {
		r.ESMClass = 0x04
	}
	data, err := json.Marshal(r)
	if err != nil {
		h.t.Fatal(err)
	}
	h.raw(data)
}

// raw stores any bytes on sms.dlr.<link>.
func (h *harness) raw(data []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := h.js.Publish(ctx, "sms.dlr."+link, data); err != nil {
		h.t.Fatalf("publish receipt: %v", err)
	}
}

// text is an SMPP 3.4 Appendix B receipt text.
func text(id, stat, errCode string) []byte {
	return []byte("id:" + id + " sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:" + stat + " err:" + errCode + " text:Your code is 4821")
}

func (h *harness) count(result string) float64 {
	return testutil.ToFloat64(h.m.results.WithLabelValues(result))
}

// waitCount waits until processed_total{result} reaches n.
func (h *harness) waitCount(result string, n float64) {
	h.t.Helper()
	natstest.Eventually(h.t, wait, "want processed_total{result="+result+"} to reach the expected count", func() bool {
		return h.count(result) >= n
	})
	if got := h.count(result); got != n {
		h.t.Fatalf("processed_total{result=%q} = %v, want %v", result, got, n)
	}
}

// drained waits until the consumer holds nothing: no pending, none awaiting ack.
func (h *harness) drained() {
	h.t.Helper()
	var last *jetstream.ConsumerInfo
	natstest.Eventually(h.t, wait, "want the receipts consumer to have nothing pending", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := h.js.Consumer(ctx, streams.DLR, streams.ConsumerReceipts)
		if err != nil {
			return false
		}
		last, err = c.Info(ctx)
		return err == nil && last.NumPending == 0 && last.NumAckPending == 0
	})
}

// history returns every status event of id (none: nil).
func (h *harness) history(id string) []status.Event {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	evs, err := h.pub.History(ctx, id, 100)
	if errors.Is(err, status.ErrNotFound) {
		return nil
	}
	if err != nil {
		h.t.Fatalf("history of %s: %v", id, err)
	}
	return evs
}

// onlyTerminal returns the one terminal event of id, and fails unless there is exactly one.
func (h *harness) onlyTerminal(id string) status.Event {
	h.t.Helper()
	var out []status.Event
	for _, ev := range h.history(id) {
		if status.Terminal(ev.Status) {
			out = append(out, ev)
		}
	}
	if len(out) != 1 {
		h.t.Fatalf("terminal events of %s = %+v, want exactly one", id, out)
	}
	return out[0]
}

func TestAFinalReceiptGivesTheMessageItsTerminalStatus(t *testing.T) {
	h := start(t, Options{}) // one stage for every case: each has its own ids
	for _, tc := range []struct {
		name     string
		smscID   string
		rec      dlr.Record
		want     string
		wantCode int
	}{
		{name: "a DELIVRD receipt gives delivered", smscID: "a1",
			rec: dlr.Record{Text: text("a1", "DELIVRD", "000")}, want: status.Delivered},
		{name: "an UNDELIV receipt gives undelivered with its err code", smscID: "a2",
			rec: dlr.Record{Text: text("a2", "UNDELIV", "011")}, want: status.Undelivered, wantCode: 11},
		{name: "an err with leading zeros is decimal, not octal", smscID: "a3",
			rec: dlr.Record{Text: text("a3", "UNDELIV", "069")}, want: status.Undelivered, wantCode: 69},
		{name: "an err in hex is read as hex", smscID: "a4",
			rec: dlr.Record{Text: text("a4", "UNDELIV", "0x0B")}, want: status.Undelivered, wantCode: 11},
		{name: "a DELETED receipt gives undelivered", smscID: "a5",
			rec: dlr.Record{Text: text("a5", "DELETED", "004")}, want: status.Undelivered, wantCode: 4},
		{name: "a REJECTD receipt gives undelivered", smscID: "a6",
			rec: dlr.Record{Text: text("a6", "REJECTD", "008")}, want: status.Undelivered, wantCode: 8},
		{name: "an EXPIRED receipt gives expired", smscID: "a7",
			rec: dlr.Record{Text: text("a7", "EXPIRED", "003")}, want: status.Expired, wantCode: 3},
		{name: "a receipt with only TLVs (receipted_message_id, message_state delivered) gives delivered", smscID: "b1",
			rec: dlr.Record{ReceiptedID: "b1", MessageState: 2}, want: status.Delivered},
		{name: "a TLV-only undeliverable receipt takes its err from network_error_code", smscID: "b2",
			rec: dlr.Record{ReceiptedID: "b2", MessageState: 5, NetworkError: []byte{3, 0, 27}}, want: status.Undelivered, wantCode: 27},
		{name: "a TLV-only expired receipt gives expired", smscID: "b3",
			rec: dlr.Record{ReceiptedID: "b3", MessageState: 3}, want: status.Expired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			id := "01JMSG00000000000000000" + strings.ToUpper(tc.smscID)
			before := h.count(tc.want)
			h.indexed(tc.smscID, id)
			h.receipt(tc.rec)
			h.waitCount(tc.want, before+1)
			h.drained()
			ev := h.onlyTerminal(id)
			if ev.Status != tc.want || ev.Code != tc.wantCode {
				t.Fatalf("event = %s code %d, want %s code %d", ev.Status, ev.Code, tc.want, tc.wantCode)
			}
			if ev.SMSCID != tc.smscID || ev.Link != link || ev.Stage != "receipts" || ev.Parts != 1 {
				t.Fatalf("event = %+v, want smsc_id %q, link %q, stage receipts, parts 1", ev, tc.smscID, link)
			}
			if n := len(h.history(id)); n != 1 {
				t.Fatalf("%d events on %s, want 1", n, status.Subject(id))
			}
		})
	}
}

func TestAnIntermediateReceiptIsAckedWithNoStatus(t *testing.T) {
	h := start(t, Options{})
	for i, tc := range []struct {
		name, smscID string
		rec          dlr.Record
	}{
		{"an ENROUTE text receipt", "c1", dlr.Record{Text: text("c1", "ENROUTE", "000")}},
		{"an ACCEPTD text receipt", "c2", dlr.Record{Text: text("c2", "ACCEPTD", "000")}},
		{"a TLV-only enroute receipt", "c3", dlr.Record{ReceiptedID: "c3", MessageState: 1}},
		{"a TLV-only accepted receipt", "c4", dlr.Record{ReceiptedID: "c4", MessageState: 6}},
		{"a receipt of unknown state", "c5", dlr.Record{Text: text("c5", "UNKNOWN", "000")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			id := "01JMSG00000000000000000" + strings.ToUpper(tc.smscID)
			h.indexed(tc.smscID, id)
			h.receipt(tc.rec)
			h.waitCount("intermediate", float64(i+1))
			h.drained()
			if evs := h.history(id); len(evs) != 0 {
				t.Fatalf("events on %s = %+v, want none for an intermediate receipt", status.Subject(id), evs)
			}
			if n := h.terms.Load(); n != 0 {
				t.Fatalf("%d receipts terminated, want 0: an intermediate receipt is acked", n)
			}
		})
	}
}

func TestAReceiptThatOvertakesItsIndexEntryIsRetriedUntilTheEntryAppears(t *testing.T) {
	h := start(t, Options{BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	const id = "01JMSG0000000000000000000D"
	h.receipt(dlr.Record{Text: text("d1", "DELIVRD", "000")})
	// Egress writes the entry a moment after the SMSC answered; the receipt got here first.
	late := time.AfterFunc(300*time.Millisecond, func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if _, err := h.index.Put(ctx, dlr.Key(link, "d1"), []byte(`{"id":"`+id+`","parts":1}`)); err != nil {
			t.Errorf("late index write: %v", err)
		}
	})
	defer late.Stop()
	h.waitCount(status.Delivered, 1)
	h.drained()
	if ev := h.onlyTerminal(id); ev.Status != status.Delivered {
		t.Fatalf("status = %s, want delivered", ev.Status)
	}
	if n := h.count("orphan"); n != 0 {
		t.Fatalf("orphans = %v, want 0", n)
	}
}

func TestAReceiptWhoseIndexNeverAppearsBecomesAnOrphan(t *testing.T) {
	h := start(t, Options{OrphanAfter: time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	began := time.Now()
	h.receipt(dlr.Record{Text: text("e1", "DELIVRD", "000")})
	h.waitCount("orphan", 1)
	if d := time.Since(began); d < time.Second {
		t.Fatalf("orphaned after %v, want no sooner than OrphanAfter (1s)", d)
	}
	h.drained()
	natstest.Eventually(t, wait, "want the orphan terminated", func() bool { return h.terms.Load() == 1 })

	// The consumer is not stuck: a receipt after the orphan is processed.
	const id = "01JMSG0000000000000000000E"
	h.indexed("e2", id)
	h.receipt(dlr.Record{Text: text("e2", "DELIVRD", "000")})
	h.waitCount(status.Delivered, 1)
	h.drained()
	if n := h.count("orphan"); n != 1 {
		t.Fatalf("orphans = %v, want 1", n)
	}
}

func TestTwoReceiptsForOneMessageGiveOneTerminalStatus(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000000F"
	// A duplicate submit: the SMSC accepted the message twice, under two ids.
	h.indexed("f1", id)
	h.indexed("f2", id)
	h.receipt(dlr.Record{Text: text("f1", "DELIVRD", "000")})
	h.receipt(dlr.Record{Text: text("f2", "DELIVRD", "000")})
	h.waitCount(status.Delivered, 1)
	h.waitCount("duplicate", 1)
	h.drained()
	if ev := h.onlyTerminal(id); ev.Status != status.Delivered {
		t.Fatalf("status = %s, want delivered", ev.Status)
	}
	if n := len(h.history(id)); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

func TestAReceiptForAMessageThatAlreadyFailedLeavesItFailed(t *testing.T) {
	h := start(t, Options{})
	const id = "01JMSG0000000000000000000G"
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.pub.Publish(ctx, status.Event{ID: id, Status: status.Failed, Reason: status.ReasonMaxAttempts, Stage: "egress"}); err != nil {
		t.Fatal(err)
	}
	h.indexed("g1", id)
	h.receipt(dlr.Record{Text: text("g1", "DELIVRD", "000")})
	h.waitCount("duplicate", 1)
	h.drained()
	if ev := h.onlyTerminal(id); ev.Status != status.Failed {
		t.Fatalf("status = %s, want failed to stay", ev.Status)
	}
	latest, err := h.pub.Latest(ctx, id)
	if err != nil || latest.Status != status.Failed {
		t.Fatalf("latest = %+v, %v; want failed", latest, err)
	}
	if n := h.count(status.Delivered); n != 0 {
		t.Fatalf("delivered = %v, want 0", n)
	}
}

func TestGarbageOnSMSDLRIsSkippedAndDoesNotStallTheConsumer(t *testing.T) {
	h := start(t, Options{})
	garbage := [][]byte{
		[]byte("not json at all"),
		[]byte(`{"link":"sim1",`),
		[]byte(`"a JSON string"`),
		[]byte(`[1,2,3]`),
		[]byte(`null`),
		[]byte(`{}`),
		[]byte(`{"link":"sim1","esm_class":4,"text":"aGVsbG8gdGhlcmU="}`), // "hello there": no id, no stat
		[]byte(`{"link":"sim1","text":"c3RhdDpERUxJVlJE"}`),               // "stat:DELIVRD": no id
	}
	for _, g := range garbage {
		h.raw(g)
	}
	const id = "01JMSG0000000000000000000H"
	h.indexed("h1", id)
	h.receipt(dlr.Record{Text: text("h1", "DELIVRD", "000")})
	h.waitCount("invalid", float64(len(garbage)))
	h.waitCount(status.Delivered, 1)
	h.drained()
	natstest.Eventually(t, wait, "want every garbage record terminated", func() bool {
		return h.terms.Load() == int64(len(garbage))
	})
	if ev := h.onlyTerminal(id); ev.Status != status.Delivered {
		t.Fatalf("status = %s, want delivered", ev.Status)
	}
}

func TestAnUnreadableIndexEntryIsCountedInvalidNotRetried(t *testing.T) {
	h := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := h.index.Put(ctx, dlr.Key(link, "i1"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	h.receipt(dlr.Record{Text: text("i1", "DELIVRD", "000")})
	h.waitCount("invalid", 1)
	h.drained()
	natstest.Eventually(t, wait, "want the receipt terminated", func() bool { return h.terms.Load() == 1 })
}

func TestSMSCIDsAreMatchedAfterNormalisation(t *testing.T) {
	h := start(t, Options{})
	for i, tc := range []struct {
		name, indexedAs string
		rec             dlr.Record
	}{
		{"an id submitted in upper case matches its receipt in lower case", "0A1B2CFF",
			dlr.Record{Text: text("0a1b2cff", "DELIVRD", "000")}},
		{"an id submitted in lower case matches its receipt in upper case", "0a1b2cff",
			dlr.Record{Text: text("0A1B2CFF", "DELIVRD", "000")}},
		{"an id with surrounding spaces and NULs matches", " 0A1B2CFF\x00",
			dlr.Record{ReceiptedID: "  0a1b2cff\x00", MessageState: 2}},
		{"a TLV id with leading spaces matches", "0A1B2CFF",
			dlr.Record{ReceiptedID: "   0A1B2cff", MessageState: 2}},
		{"an id that needs an encoded key matches", "AB.CD/1",
			dlr.Record{ReceiptedID: "ab.cd/1", MessageState: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			id := fmt.Sprintf("01JMSG0000000000000000000%d", i)
			h.indexed(tc.indexedAs, id)
			h.receipt(tc.rec)
			h.waitCount(status.Delivered, float64(i+1))
			h.drained()
			h.onlyTerminal(id)
		})
	}
}

func TestErrCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"000", 0}, {"001", 1}, {"011", 11}, {"069", 69}, {"008", 8}, {"11", 11},
		{"0x0B", 11}, {"0X1f", 31}, {"abc", 0}, {"12x", 0}, {"-5", 0}, {"99999999999999999999", 0},
	} {
		if got := errCode(tc.in); got != tc.want {
			t.Errorf("errCode(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestRunStoppedBeforeItStartsReturnsNil(t *testing.T) {
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	s := New(js, pub, Options{}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	stopped, stop := context.WithCancel(context.Background())
	stop()
	if err := s.Run(stopped); err != nil {
		t.Fatalf("Run = %v, want nil: a stop before the first fetch is still a clean stop", err)
	}
}

func TestRunWithoutItsStreamsIsAnError(t *testing.T) {
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// SMS_STATUS only, so a Publisher exists but sms_dlr_index does not.
	ss, err := streams.Streams()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ss {
		if c.Name == streams.Status {
			if _, err := js.CreateStream(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub, err := status.NewPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	s := New(js, pub, Options{}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), streams.BucketDLRIndex) {
		t.Fatalf("Run = %v, want an error naming %s", err, streams.BucketDLRIndex)
	}
}

// The index entry carries the sequence of the submitted event, so the final
// status is written right after it without a read; when another event came
// in between (or the sequence is wrong), the careful path still writes it
// once, and a message already final stays so.
func TestTheFinalStatusFollowsTheSubmittedEventTheIndexNames(t *testing.T) {
	h := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i, tc := range []struct {
		name  string
		off   int64 // added to the submitted event's sequence in the entry
		extra string
	}{
		{name: "the submitted event is the latest", off: 0},
		{name: "another event came after it", off: 0, extra: status.Queued},
		{name: "the entry names a wrong sequence", off: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			id, smscID := fmt.Sprintf("01JMSG0000000000000000SEQ%d", i), fmt.Sprintf("q%d", i)
			seq, err := h.pub.PublishSeq(ctx, status.Event{ID: id, Status: status.Submitted, Stage: "egress", Link: link, SMSCID: smscID, Parts: 1})
			if err != nil || seq == 0 {
				t.Fatalf("submitted: seq %d, %v", seq, err)
			}
			if tc.extra != "" {
				if _, err := h.js.Publish(ctx, status.Subject(id), []byte(`{"id":"`+id+`","status":"`+tc.extra+`"}`)); err != nil {
					t.Fatal(err)
				}
			}
			before := h.count(status.Delivered)
			h.indexedAfter(smscID, id, uint64(int64(seq)+tc.off))
			h.receipt(dlr.Record{Text: text(smscID, "DELIVRD", "000")})
			h.waitCount(status.Delivered, before+1)
			h.receipt(dlr.Record{Text: text(smscID, "UNDELIV", "011")}) // a second final receipt loses
			h.waitCount("duplicate", 1+float64(i))
			h.drained()
			if ev := h.onlyTerminal(id); ev.Status != status.Delivered {
				t.Fatalf("terminal event %+v, want delivered", ev)
			}
		})
	}
}
