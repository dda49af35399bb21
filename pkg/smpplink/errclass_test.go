package smpplink_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

// Every command_status of the table, and one nobody listed, comes back from
// the simulator's error injection as a SubmitError of the right class, with
// the status, known not sent.
func TestEveryCommandStatusIsClassifiedFromARealSubmitResp(t *testing.T) {
	retry := []pdu.Status{0x04, 0x08, 0x14, 0x45, 0x64, 0xFE, 0xFF}
	permanent := []pdu.Status{0x01, 0x02, 0x03, 0x06, 0x07, 0x0A, 0x0B, 0x0C, 0x15, 0x40, 0x42, 0x43, 0x44,
		0x48, 0x49, 0x50, 0x51, 0x53, 0x54, 0x61, 0x62, 0x63, 0x65, 0x66, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4,
		0x0400} // 0x0400: vendor-specific and unknown to the table: permanent
	want := map[pdu.Status]smpplink.Class{0x58: smpplink.Throttled}
	for _, st := range retry {
		want[st] = smpplink.Retryable
	}
	for _, st := range permanent {
		want[st] = smpplink.Permanent
	}
	byDst := map[string]pdu.Status{}
	for st := range want {
		byDst[fmt.Sprintf("42060%07d", uint32(st))] = st
	}
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true,
		Fail: func(dst string, _ int) pdu.Status { return byDst[dst] }}))
	l := open(t, config(sim.Addr()), nil)
	counts := map[smpplink.Class]int{}
	for dst, st := range byDst {
		_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+" + dst, Text: "hi"})
		var se *smpplink.SubmitError
		if !errors.As(err, &se) {
			t.Fatalf("%s: err = %v, want a *SubmitError", smpplink.StatusName(st), err)
		}
		if se.Status != st || se.Class != want[st] || se.Unknown || se.Sent != 0 {
			t.Errorf("%s: Status %#x Class %v Unknown %v Sent %d; want %#x %v known 0", smpplink.StatusName(st),
				uint32(se.Status), se.Class, se.Unknown, se.Sent, uint32(st), want[st])
		}
		counts[se.Class]++
	}
	if counts[smpplink.Retryable] != 7 || counts[smpplink.Throttled] != 1 || counts[smpplink.Permanent] != 30 {
		t.Fatalf("classes %v, want 7 retryable, 1 throttled, 30 permanent", counts)
	}
	if sim.Rejected() != 38 || sim.Accepted() != 0 {
		t.Fatalf("simulator rejected %d, accepted %d; want 38, 0", sim.Rejected(), sim.Accepted())
	}
	if got := smpplink.StatusName(0x0B); got != "ESME_RINVDSTADR" {
		t.Fatalf("StatusName(0x0B) = %q", got)
	}
}

// A connection lost while a submit waits for its response is retryable, and
// its outcome unknown: the SMSC may have taken it.
func TestAConnectionLostWithASubmitInFlightIsRetryableAndUnknown(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true, RespDelay: 2 * time.Second}))
	l := open(t, config(sim.Addr()), nil)
	errc := make(chan error, 1)
	go func() {
		_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: "hi"})
		errc <- err
	}()
	natstest.Eventually(t, wait, "want the submit at the simulator", func() bool { return sim.Accepted() == 1 })
	sim.DropConnections()
	var err error
	select {
	case err = <-errc:
	case <-time.After(wait):
		t.Fatal("the submit did not end after its connection was dropped")
	}
	var se *smpplink.SubmitError
	if !errors.As(err, &se) || !errors.Is(err, smpp.ErrNotConnected) || se.Class != smpplink.Retryable || !se.Unknown {
		t.Fatalf("err = %v, want a retryable, unknown *SubmitError wrapping smpp.ErrNotConnected", err)
	}
}
