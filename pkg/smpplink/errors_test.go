package smpplink_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"

	"github.com/smsflow/smsflow/pkg/smpplink"
)

func TestClassifySortsEverySubmitFailure(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want smpplink.Class
	}{
		{"ESME_RTHROTTLED is throttled", pdu.Status(0x58), smpplink.Throttled},
		{"ESME_RSYSERR is retryable", pdu.Status(0x08), smpplink.Retryable},
		{"ESME_RMSGQFUL is retryable", pdu.Status(0x14), smpplink.Retryable},
		{"ESME_RSUBMITFAIL is retryable", pdu.Status(0x45), smpplink.Retryable},
		{"ESME_RX_T_APPN is retryable", pdu.Status(0x64), smpplink.Retryable},
		{"ESME_RUNKNOWNERR is retryable", pdu.Status(0xFF), smpplink.Retryable},
		{"ESME_RINVSRCADR is permanent", pdu.Status(0x0A), smpplink.Permanent},
		{"ESME_RINVDSTADR is permanent", pdu.Status(0x0B), smpplink.Permanent},
		{"ESME_RINVMSGLEN is permanent", pdu.Status(0x01), smpplink.Permanent},
		{"ESME_RX_R_APPN is permanent", pdu.Status(0x66), smpplink.Permanent},
		{"a wrapped status keeps its class", fmt.Errorf("submit: %w", pdu.Status(0x0B)), smpplink.Permanent},
		{"a response timeout is retryable", smpp.ErrTimeout, smpplink.Retryable},
		{"not bound is retryable", smpp.ErrNotBound, smpplink.Retryable},
		{"not connected is retryable", smpp.ErrNotConnected, smpplink.Retryable},
		{"a connection closed by the SMSC is retryable", io.EOF, smpplink.Retryable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := smpplink.Classify(c.err); got != c.want {
				t.Fatalf("Classify(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}

func TestSubmitErrorUnwrapsToTheSMSCStatus(t *testing.T) {
	err := error(&smpplink.SubmitError{Link: "l1", Status: 0x0B, Class: smpplink.Permanent, Err: pdu.Status(0x0B)})
	var st pdu.Status
	if !errors.As(err, &st) || st != 0x0B {
		t.Fatalf("errors.As(%v, pdu.Status) = %v, want 0x0B", err, st)
	}
}
