package smpplink_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"go.uber.org/goleak"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

func TestSubmitOfAShortTextReturnsOneSMSCID(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
	l := open(t, config(sim.Addr()), nil)
	res, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop123", Dst: "+420600000001", Text: "Your code is 4821"})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	subs := sim.Submits()
	if len(res.IDs) != 1 || len(subs) != 1 || res.IDs[0] != subs[0].MessageID {
		t.Fatalf("ids %v, simulator accepted %d; want one id, the simulator's", res.IDs, len(subs))
	}
	if subs[0].Dest != "420600000001" || subs[0].Source != "Eshop123" || subs[0].ESMClass != 0 {
		t.Fatalf("submit_sm dest %q source %q esm_class %#x; want 420600000001, Eshop123, 0", subs[0].Dest, subs[0].Source, subs[0].ESMClass)
	}
}

func TestALongTextIsSentAsOnePartPerSubmitWithAUDH(t *testing.T) {
	cases := []struct {
		name  string
		text  string
		parts int
		dcs   uint8
	}{
		{"400 GSM characters are three parts of 153", strings.Repeat("abcd", 100), 3, 0},
		{"100 UCS-2 units with an emoji are two parts of 67", strings.Repeat("ž", 98) + "😀", 2, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
			l := open(t, config(sim.Addr()), nil)
			res, err := l.Submit(context.Background(), smpplink.Short{Src: "420777000111", Dst: "+420600000001", Text: c.text})
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			subs := sim.Submits()
			if len(res.IDs) != c.parts || len(subs) != c.parts {
				t.Fatalf("%d ids, simulator accepted %d submits; want %d of each", len(res.IDs), len(subs), c.parts)
			}
			for i, s := range subs {
				if s.ESMClass != 0x40 || s.DataCoding != c.dcs || res.IDs[i] != s.MessageID {
					t.Fatalf("part %d: esm_class %#x data_coding %d id %q; want 0x40 (UDH), %d, %q", i+1, s.ESMClass, s.DataCoding, res.IDs[i], c.dcs, s.MessageID)
				}
			}
		})
	}
}

func TestARefusedSubmitIsASubmitErrorWithTheStatusAndItsClass(t *testing.T) {
	refuse := map[string]pdu.Status{"420600000002": 0x0B, "420600000003": 0x58, "420600000004": 0x08}
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true,
		Fail: func(dst string, n int) pdu.Status { return refuse[dst] }}))
	l := open(t, config(sim.Addr()), nil)
	cases := []struct {
		name   string
		dst    string
		status pdu.Status
		class  smpplink.Class
	}{
		{"ESME_RINVDSTADR is permanent", "+420600000002", 0x0B, smpplink.Permanent},
		{"ESME_RTHROTTLED is throttled", "+420600000003", 0x58, smpplink.Throttled},
		{"ESME_RSYSERR is retryable", "+420600000004", 0x08, smpplink.Retryable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: c.dst, Text: "hi"})
			var se *smpplink.SubmitError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *SubmitError", err)
			}
			if se.Status != c.status || se.Class != c.class || se.Unknown || se.Link != "l1" {
				t.Fatalf("SubmitError{Link %q Status %#x Class %v Unknown %v}; want l1, %#x, %v, known", se.Link, uint32(se.Status), se.Class, se.Unknown, uint32(c.status), c.class)
			}
		})
	}
}

func TestAResponseTimeoutIsRetryableAndItsOutcomeUnknown(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, RespDelay: 2 * time.Second}))
	cfg := config(sim.Addr())
	cfg.RespTimeout = 200 * time.Millisecond
	l := open(t, cfg, nil)
	_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "hi"})
	var se *smpplink.SubmitError
	if !errors.As(err, &se) || !errors.Is(err, smpp.ErrTimeout) {
		t.Fatalf("err = %v, want a *SubmitError wrapping smpp.ErrTimeout", err)
	}
	if se.Class != smpplink.Retryable || !se.Unknown {
		t.Fatalf("class %v unknown %v, want retryable and unknown: the SMSC may have it", se.Class, se.Unknown)
	}
}

func TestASubmitWhileUnboundIsRetryableAndKnownNotSent(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	cfg := config(sim.Addr())
	cfg.Password = "wrong"
	l := smpplink.Open(cfg, nil, slog.New(slog.DiscardHandler))
	defer l.Close()
	_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "hi"})
	var se *smpplink.SubmitError
	if !errors.As(err, &se) || !errors.Is(err, smpp.ErrNotBound) || se.Class != smpplink.Retryable || se.Unknown {
		t.Fatalf("err = %v, want a retryable, known *SubmitError wrapping smpp.ErrNotBound", err)
	}
	if sim.Accepted()+sim.Rejected() != 0 {
		t.Fatal("the simulator saw a submit from an unbound link")
	}
}

func TestTheWindowQueuesSubmitsInsteadOfFailingThem(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, RespDelay: 300 * time.Millisecond}))
	cfg := config(sim.Addr())
	cfg.Window = 2
	l := open(t, cfg, nil)
	start := time.Now()
	submitAll(t, l, 6) // a failure would mean a full window failed a submit
	took := time.Since(start)
	if sim.Accepted() != 6 {
		t.Fatalf("simulator accepted %d, want 6", sim.Accepted())
	}
	// 6 submits, 2 at a time, 300 ms each: at least three rounds. A lower
	// bound only: more than 2 in flight would finish in fewer rounds.
	if took < 800*time.Millisecond {
		t.Fatalf("6 submits with window 2 took %v, want >= 800ms: more than 2 were in flight", took)
	}
}

func TestSubmitWaitingForTheWindowGivesUpWithItsContext(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, RespDelay: time.Second}))
	cfg := config(sim.Addr())
	cfg.Window = 1
	l := open(t, cfg, nil)
	first := make(chan struct{})
	go func() {
		defer close(first)
		_, _ = l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "first"})
	}()
	defer func() { <-first }()
	natstest.Eventually(t, wait, "want the first submit at the simulator", func() bool {
		return len(sim.Submits()) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := l.Submit(ctx, smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "second"})
	var se *smpplink.SubmitError
	if !errors.As(err, &se) || !errors.Is(err, context.DeadlineExceeded) || se.Unknown {
		t.Fatalf("err = %v, want a known *SubmitError wrapping context.DeadlineExceeded", err)
	}
}

func TestTheLinkRebindsAfterTheSMSCDropsIt(t *testing.T) {
	before := goleak.IgnoreCurrent()
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
	l := open(t, config(sim.Addr()), nil)
	for round := 1; round <= 3; round++ {
		sim.DropConnections()
		natstest.Eventually(t, wait, "want the link to notice it is no longer bound", func() bool { return !l.Bound() })
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := l.WaitBound(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: not bound again within %v: %v", round, wait, err)
		}
		if _, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "after drop"}); err != nil {
			t.Fatalf("round %d: submit after rebind: %v", round, err)
		}
	}
	if got := sim.Accepted(); got != 3 {
		t.Fatalf("simulator accepted %d, want 3", got)
	}
	_ = l.Close()
	_ = sim.Close()
	goleak.VerifyNone(t, before)
}

func TestALinkWithSubmitsAndReceiptsInFlightClosesPromptly(t *testing.T) {
	before := goleak.IgnoreCurrent()
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	var mu sync.Mutex
	receipts := 0
	l := smpplink.Open(config(sim.Addr()), func(_ context.Context, p pdu.Body) error {
		mu.Lock()
		receipts++
		mu.Unlock()
		return nil
	}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := l.WaitBound(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var unknown atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "x", Receipt: true})
				var se *smpplink.SubmitError
				if errors.As(err, &se) && se.Unknown {
					unknown.Add(1)
				}
			}
		}()
	}
	natstest.Eventually(t, wait, "want receipts coming in", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return receipts > 10
	})
	start := time.Now()
	_ = l.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v with receipts flowing", d)
	}
	wg.Wait()
	if n := unknown.Load(); n != 0 {
		t.Fatalf("%d submits ended with an unknown outcome: Close must let the window finish first", n)
	}
	_ = sim.Close()
	goleak.VerifyNone(t, before)
}

func TestCloseIsIdempotentAndPrompt(t *testing.T) {
	before := goleak.IgnoreCurrent()
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	l := open(t, config(sim.Addr()), nil)
	start := time.Now()
	for range 3 {
		if err := l.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v, want it prompt", d)
	}
	if l.Bound() {
		t.Fatal("still bound after Close")
	}
	natstest.Eventually(t, wait, "want the simulator to see the unbind", func() bool { return sim.Binds() == 0 })
	_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "late"})
	if !errors.Is(err, smpp.ErrNotBound) {
		t.Fatalf("submit after Close: %v, want smpp.ErrNotBound", err)
	}
	_ = sim.Close()
	goleak.VerifyNone(t, before)
}

func TestCloseOfALinkThatNeverBoundReturns(t *testing.T) {
	before := goleak.IgnoreCurrent()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	l := smpplink.Open(config(addr), nil, slog.New(slog.DiscardHandler))
	natstest.Eventually(t, wait, "want a connection error recorded", func() bool { return l.LastError() != nil })
	start := time.Now()
	_ = l.Close()
	_ = l.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close of a never bound link took %v", d)
	}
	if l.Bound() {
		t.Fatal("bound to a closed port?")
	}
	goleak.VerifyNone(t, before)
}

func TestThePasswordNeverReachesTheLog(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
	var buf natstest.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// A wrong password first: a bind failure logs its error...
	bad := config(sim.Addr())
	bad.Password = passwd + "-wrong"
	lb := smpplink.Open(bad, nil, log)
	natstest.Eventually(t, wait, "want a bind failure", func() bool { return lb.LastError() != nil })
	_ = lb.Close()

	// ...then a good bind, a submit, a drop and a rebind.
	l := open(t, config(sim.Addr()), log)
	log.Info("link config", "config", config(sim.Addr()))
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("link config", "config", config(sim.Addr()))
	if _, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	sim.DropConnections()
	natstest.Eventually(t, wait, "want the link rebound", func() bool { return l.Bound() && sim.Binds() == 1 })
	_ = l.Close()

	out := buf.String()
	if !strings.Contains(out, "smpp bound") || !strings.Contains(out, "smpp not bound") {
		t.Fatalf("log lacks the bind events it should have:\n%s", out)
	}
	if strings.Contains(out, passwd) {
		t.Fatalf("the password %q is in the log:\n%s", passwd, out)
	}
}

func TestALongTextNeverSplitsAnEuroSignOrAnEmojiAcrossParts(t *testing.T) {
	cases := []struct {
		name  string
		text  string
		parts int
		// cutsAPair reports whether a part body ends in the first half of a pair.
		cutsAPair func(body []byte) bool
	}{
		{"an escape pair (€) straddling septet 153 moves to the next part", "aa" + strings.Repeat("€", 100), 2,
			func(b []byte) bool { return len(b) > 0 && b[len(b)-1] == 0x1B }},
		{"a surrogate pair (emoji) straddling unit 67 moves to the next part", strings.Repeat("ž", 66) + strings.Repeat("😀", 10), 2,
			func(b []byte) bool { return len(b) >= 2 && b[len(b)-2]&0xFC == 0xD8 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
			l := open(t, config(sim.Addr()), nil)
			res, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: c.text})
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			subs := sim.Submits()
			if len(res.IDs) != c.parts || len(subs) != c.parts {
				t.Fatalf("%d ids, %d submits; want %d parts", len(res.IDs), len(subs), c.parts)
			}
			codec, _ := smpplink.Encode(c.text)
			var joined []byte
			for i, s := range subs {
				udh, body := s.ShortMessage[:6], s.ShortMessage[6:]
				if s.ESMClass != 0x40 || udh[0] != 5 || udh[1] != 0 || udh[2] != 3 || udh[4] != byte(c.parts) || udh[5] != byte(i+1) ||
					udh[3] != subs[0].ShortMessage[3] {
					t.Fatalf("part %d: esm_class %#x UDH % x, want 0x40 and an 8-bit reference UDH, same reference, part %d of %d", i+1, s.ESMClass, udh, i+1, c.parts)
				}
				if c.cutsAPair(body) {
					t.Fatalf("part %d ends inside a character pair: % x", i+1, body[len(body)-2:])
				}
				joined = append(joined, body...)
			}
			if string(joined) != string(codec.Encode()) {
				t.Fatal("the parts joined are not the encoded text")
			}
		})
	}
}

func TestALongTextRefusedMidwayReportsThePartsAlreadySent(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, Fail: func(_ string, n int) pdu.Status {
		if n == 3 {
			return 0x58 // the third part is throttled
		}
		return 0
	}}))
	l := open(t, config(sim.Addr()), nil)
	_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: strings.Repeat("abcd", 100)})
	var se *smpplink.SubmitError
	if !errors.As(err, &se) || se.Class != smpplink.Throttled || se.Sent != 2 {
		t.Fatalf("err = %#v, want a throttled *SubmitError with Sent 2", err)
	}
	if sim.Accepted() != 2 {
		t.Fatalf("simulator accepted %d parts, want 2", sim.Accepted())
	}
}
