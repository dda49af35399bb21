package smpplink

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
)

func TestOutcomeIsUnknownOnlyWhenTheSubmitMayHaveReachedTheSMSC(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"a response timeout may have been accepted", smpp.ErrTimeout, true},
		{"a connection lost while waiting may have been accepted", smpp.ErrNotConnected, true},
		{"EOF while waiting may have been accepted", io.EOF, true},
		{"not bound was never sent", smpp.ErrNotBound, false},
		{"a wrapped not bound was never sent", fmt.Errorf("x: %w", smpp.ErrNotBound), false},
		{"a cancelled wait for the window was never sent", context.Canceled, false},
		{"an SMSC answer is known", pdu.Status(0x08), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := outcomeUnknown(c.err); got != c.want {
				t.Fatalf("outcomeUnknown(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}
