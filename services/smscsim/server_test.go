package smscsim_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
	"go.uber.org/goleak"

	"github.com/smsflow/smsflow/services/smscsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func creds(o smscsim.Options) smscsim.Options {
	o.SystemID, o.Password = user, passwd
	return o
}

func TestBindWithGoodCredentialsIsCountedUntilUnbind(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	tc := connect(t, sim.Addr(), &inbox{})
	eventually(t, wait, "want 1 bind", func() bool { return sim.Binds() == 1 })
	if err := tc.Close(); err != nil {
		t.Fatalf("client close: %v", err)
	}
	eventually(t, wait, "want 0 binds after unbind", func() bool { return sim.Binds() == 0 })
}

func TestBindWithWrongCredentialsFailsAndNeverLogsThePassword(t *testing.T) {
	cases := []struct {
		name       string
		user, pass string
		want       pdu.Status
	}{
		{"a wrong system_id gets ESME_RBINDFAIL", "intruder", passwd, 0x0d},
		{"a wrong password gets ESME_RINVPASWD", user, "guessed-pw", 0x0e},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			var mu sync.Mutex
			log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
			sim := smscsim.NewServer(t, creds(smscsim.Options{Log: log}))
			_, st := transceiver(t, sim.Addr(), c.user, c.pass, &inbox{}, time.Hour)
			s := awaitStatus(t, st, smpp.BindFailed)
			var got pdu.Status
			if !errors.As(s.Error(), &got) || got != c.want {
				t.Fatalf("bind error = %v, want status %#x", s.Error(), uint32(c.want))
			}
			if n := sim.Binds(); n != 0 {
				t.Fatalf("Binds = %d after a refused bind, want 0", n)
			}
			sim.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, pw := range []string{passwd, "guessed-pw"} {
				if strings.Contains(logs.String(), pw) {
					t.Fatalf("log contains a password:\n%s", logs.String())
				}
			}
			if !strings.Contains(logs.String(), "bind refused") {
				t.Fatalf("log lacks the refused bind:\n%s", logs.String())
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestSubmitsGetUniqueMessageIDsAcrossRestarts(t *testing.T) {
	const n = 50
	seen := map[string]bool{}
	for restart := range 2 {
		sim := smscsim.NewServer(t, smscsim.Options{NoReceipts: true}) // empty credentials accept any
		tc := connect(t, sim.Addr(), &inbox{})
		var ids []string
		for i := range n {
			dst := fmt.Sprintf("+42077700%04d", i%7)
			resp, err := tc.Submit(sm("smsflow", dst, fmt.Sprintf("msg %d", i)))
			if err != nil {
				t.Fatalf("submit %d: %v", i, err)
			}
			id := resp.RespID()
			if id == "" || len(id) > 64 || !regexp.MustCompile(`^[!-~]+$`).MatchString(id) {
				t.Fatalf("message id %q: want 1-64 printable ASCII characters", id)
			}
			if seen[id] {
				t.Fatalf("message id %q repeated (restart %d)", id, restart)
			}
			seen[id] = true
			ids = append(ids, id)
		}
		if got := sim.Accepted(); got != n {
			t.Fatalf("Accepted = %d, want %d", got, n)
		}
		subs := sim.Submits()
		if len(subs) != n {
			t.Fatalf("Submits has %d entries, want %d", len(subs), n)
		}
		for i, s := range subs {
			if s.MessageID != ids[i] || s.Source != "smsflow" || string(s.ShortMessage) != fmt.Sprintf("msg %d", i) {
				t.Fatalf("Submits[%d] = %+v, want id %s from smsflow with text %q", i, s, ids[i], fmt.Sprintf("msg %d", i))
			}
			if i > 0 && s.At.Before(subs[i-1].At) {
				t.Fatalf("Submits[%d].At goes backwards", i)
			}
		}
		if got := sim.AcceptedTo("+420777000000"); got != 8 { // i%7 == 0 for 0, 7, ..., 49
			t.Fatalf("AcceptedTo = %d, want 8", got)
		}
		if err := sim.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
}

var receiptRE = regexp.MustCompile(`^id:(\S+) sub:001 dlvrd:(\d{3}) submit date:\d{10} done date:\d{10} stat:([A-Z]+) err:(\d{3}) text:(.*)$`)

func TestReceiptsCarryTheStandardTextAndTLVs(t *testing.T) {
	stats := map[string]string{"+420111": "", "+420222": "UNDELIV", "+420333": "EXPIRED", "+420444": "REJECTD"}
	sim := smscsim.NewServer(t, creds(smscsim.Options{Stat: func(dst string) string { return stats[dst] }}))
	in := &inbox{}
	tc := connect(t, sim.Addr(), in)
	wantStat := map[string]string{}
	wantState := map[string]byte{"": 2, "UNDELIV": 5, "EXPIRED": 3, "REJECTD": 8}
	for dst, stat := range stats {
		resp, err := tc.Submit(sm("Shop", dst, "Your code is 123456, valid 5 min"))
		if err != nil {
			t.Fatalf("submit to %s: %v", dst, err)
		}
		wantStat[resp.RespID()] = stat
	}
	eventually(t, wait, "want 4 receipts acked", func() bool { return sim.ReceiptsAcked() == 4 })
	got := in.receiptsByID()
	for id, stat := range wantStat {
		p := got[id]
		if p == nil {
			t.Fatalf("no receipt for %s", id)
		}
		f := p.Fields()
		if esm := f[pdufield.ESMClass].Raw().(uint8); esm != 0x04 {
			t.Fatalf("receipt esm_class = %#x, want 0x04", esm)
		}
		var dst string
		for d := range stats {
			if stats[d] == stat {
				dst = d
			}
		}
		if src := f[pdufield.SourceAddr].String(); src != dst {
			t.Fatalf("receipt source_addr = %q, want the submit's destination %q", src, dst)
		}
		if d := f[pdufield.DestinationAddr].String(); d != "Shop" {
			t.Fatalf("receipt destination_addr = %q, want the submit's source Shop", d)
		}
		m := receiptRE.FindStringSubmatch(f[pdufield.ShortMessage].String())
		if m == nil {
			t.Fatalf("receipt text %q is not the standard form", f[pdufield.ShortMessage].String())
		}
		wantText := map[bool]string{true: "DELIVRD", false: stat}[stat == ""]
		if m[1] != id || m[3] != wantText || m[5] != "Your code is 123456," {
			t.Fatalf("receipt text %q: want id %s, stat %s and the first 20 characters", m[0], id, wantText)
		}
		if delivered := stat == ""; (m[2] == "001") != delivered || (m[4] == "000") != delivered {
			t.Fatalf("receipt text %q: dlvrd/err do not match stat %s", m[0], wantText)
		}
		tlv := p.TLVFields()
		if rid := tlv[pdutlv.TagReceiptedMessageID]; rid == nil || string(rid.Bytes()) != id+"\x00" {
			t.Fatalf("receipted_message_id = %v, want C-string %q", rid, id)
		}
		if st := tlv[pdutlv.TagMessageStateOption]; st == nil || !bytes.Equal(st.Bytes(), []byte{wantState[stat]}) {
			t.Fatalf("message_state = %v, want [%d]", st, wantState[stat])
		}
	}
	if n := in.len(); n != 4 {
		t.Fatalf("handler saw %d deliver_sm, want 4 (one per submit)", n)
	}
}

func TestThrottleAnswersOverLimitSubmitsWithESME_RTHROTTLED(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{MaxPerSecond: 5, NoReceipts: true}))
	tc := connect(t, sim.Addr(), &inbox{})
	start := time.Now()
	ok, throttled := 0, 0
	for i := range 20 {
		_, err := tc.Submit(sm("smsflow", "+420777000111", fmt.Sprint(i)))
		var st pdu.Status
		switch {
		case err == nil:
			ok++
		case errors.As(err, &st) && st == smscsim.StatusThrottled:
			throttled++
		default:
			t.Fatalf("submit %d: %v, want nil or status 0x58", i, err)
		}
	}
	elapsed := time.Since(start)
	if ok+throttled != 20 || sim.Accepted() != ok || sim.Throttled() != throttled || sim.Rejected() != 0 {
		t.Fatalf("client saw %d ok / %d throttled; server counts %d / %d / %d rejected",
			ok, throttled, sim.Accepted(), sim.Throttled(), sim.Rejected())
	}
	if elapsed < time.Second && ok != 5 {
		t.Fatalf("%d of 20 submits within %v accepted, want exactly 5", ok, elapsed)
	}
	if m := sim.MaxInWindow(time.Second); m > 5 || m < 1 {
		t.Fatalf("MaxInWindow(1s) = %d, want 1..5", m)
	}
}

func TestFailInjectionReturnsTheStatus(t *testing.T) {
	const queueFull pdu.Status = 0x14
	var calls []string
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, Fail: func(dst string, n int) pdu.Status {
		calls = append(calls, fmt.Sprintf("%s#%d", dst, n)) // serialised by the server
		if dst == "+420999" && n <= 2 {
			return queueFull
		}
		return 0
	}}))
	tc := connect(t, sim.Addr(), &inbox{})
	for i, want := range []pdu.Status{queueFull, queueFull, 0} {
		_, err := tc.Submit(sm("smsflow", "+420999", "x"))
		var got pdu.Status
		if errors.As(err, &got) != (want != 0) || got != want {
			t.Fatalf("submit %d: err %v, want status %#x", i+1, err, uint32(want))
		}
	}
	if _, err := tc.Submit(sm("smsflow", "+420111", "x")); err != nil {
		t.Fatalf("submit to another destination: %v", err)
	}
	if sim.Rejected() != 2 || sim.Accepted() != 2 || sim.AcceptedTo("+420999") != 1 {
		t.Fatalf("Rejected %d Accepted %d AcceptedTo %d, want 2 2 1", sim.Rejected(), sim.Accepted(), sim.AcceptedTo("+420999"))
	}
	if want := "+420999#1 +420999#2 +420999#3 +420111#1"; strings.Join(calls, " ") != want {
		t.Fatalf("Fail calls = %v, want %s", calls, want)
	}
}

func TestRespDelaySlowsEverySubmitResponse(t *testing.T) {
	const d = 200 * time.Millisecond
	sim := smscsim.NewServer(t, creds(smscsim.Options{RespDelay: d, ReceiptDelay: d}))
	in := &inbox{}
	tc := connect(t, sim.Addr(), in)
	start := time.Now()
	resp, err := tc.Submit(sm("smsflow", "+420111", "slow"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if e := time.Since(start); e < d {
		t.Fatalf("submit_sm_resp after %v, want >= %v", e, d)
	}
	if in.len() != 0 {
		t.Fatal("receipt arrived before ReceiptDelay")
	}
	eventually(t, wait, "want the receipt acked", func() bool { return sim.ReceiptsAcked() == 1 })
	if e := time.Since(start); e < 2*d {
		t.Fatalf("receipt after %v, want >= RespDelay+ReceiptDelay = %v", e, 2*d)
	}
	if in.receiptsByID()[resp.RespID()] == nil {
		t.Fatalf("no receipt for %s", resp.RespID())
	}
}

func TestNoReceiptsSendsNone(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
	in := &inbox{}
	tc := connect(t, sim.Addr(), in)
	if _, err := tc.Submit(sm("smsflow", "+420111", "x")); err != nil {
		t.Fatalf("submit: %v", err)
	}
	// An MO sent after the submit arrives after any receipt would have: the conn is ordered.
	if err := sim.SendMO("+420111", "smsflow", "after"); err != nil {
		t.Fatalf("SendMO: %v", err)
	}
	eventually(t, wait, "want the MO", func() bool { return in.len() == 1 })
	if esm := in.all()[0].Fields()[pdufield.ESMClass].Raw().(uint8); esm != 0 {
		t.Fatalf("got esm_class %#x, want only the MO (0)", esm)
	}
}

func TestThrottleWindowSpansAllBinds(t *testing.T) {
	const limit, clients, each = 10, 3, 15
	sim := smscsim.NewServer(t, creds(smscsim.Options{MaxPerSecond: limit}))
	var wg sync.WaitGroup
	ins := make([]*inbox, clients)
	for i := range clients {
		ins[i] = &inbox{}
		tc := connect(t, sim.Addr(), ins[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				_, _ = tc.Submit(sm("smsflow", fmt.Sprintf("+42077%d%03d", i, j), "x"))
			}
		}()
	}
	wg.Wait()
	if got := sim.Accepted() + sim.Throttled(); got != clients*each {
		t.Fatalf("accepted+throttled = %d, want %d", got, clients*each)
	}
	if m := sim.MaxInWindow(time.Second); m > limit {
		t.Fatalf("MaxInWindow(1s) = %d, want <= %d", m, limit)
	}
	accepted := sim.Accepted()
	eventually(t, wait, "want every accepted submit's receipt acked", func() bool { return sim.ReceiptsAcked() == accepted })
	got := 0
	for _, in := range ins {
		got += len(in.receiptsByID())
	}
	if got != accepted {
		t.Fatalf("clients saw %d distinct receipts, want %d", got, accepted)
	}
}
