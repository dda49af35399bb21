package smpplink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
)

// Class says what the pipeline does with a failed submit.
type Class int

const (
	Retryable Class = iota // nak with backoff
	Throttled              // nak with backoff, and slow the link down
	Permanent              // term, status failed with the code
)

func (c Class) String() string {
	return [...]string{"retryable", "throttled", "permanent"}[c]
}

// SubmitError is a failed submit_sm, classified.
type SubmitError struct {
	Link    string
	Status  pdu.Status // the SMSC's command_status; 0 when it never answered
	Class   Class
	Unknown bool // the SMSC may have accepted it (no response): a retry risks a duplicate
	Sent    int  // parts of a long message the SMSC accepted before this failure: a retry sends them again
	Err     error
}

func (e *SubmitError) Error() string { return fmt.Sprintf("submit on link %s: %v", e.Link, e.Err) }
func (e *SubmitError) Unwrap() error { return e.Err }

// retryStatus are the command_status values worth another attempt; every
// other non-zero status is permanent (the message itself is refused).
var retryStatus = map[pdu.Status]bool{
	0x04: true, // ESME_RINVBNDSTS: incorrect bind status (we were unbound)
	0x08: true, // ESME_RSYSERR: system error
	0x14: true, // ESME_RMSGQFUL: message queue full
	0x45: true, // ESME_RSUBMITFAIL: submit_sm failed (generic)
	0x64: true, // ESME_RX_T_APPN: ESME receiver temporary app error
	0xFF: true, // ESME_RUNKNOWNERR
}

// ThrottledStatus is ESME_RTHROTTLED.
const ThrottledStatus pdu.Status = 0x58

// Classify maps a go-smpp submit error to a Class: 0x58 is Throttled, the
// statuses above and every transport failure (timeout, not bound, connection
// lost) are Retryable, any other command_status is Permanent.
func Classify(err error) Class {
	var st pdu.Status
	if errors.As(err, &st) {
		switch {
		case st == ThrottledStatus:
			return Throttled
		case retryStatus[st]:
			return Retryable
		default:
			return Permanent
		}
	}
	return Retryable
}

func statusOf(err error) pdu.Status {
	var st pdu.Status
	if errors.As(err, &st) {
		return st
	}
	return 0
}

// outcomeUnknown reports whether the submit_sm may have reached the SMSC
// without us seeing the answer: a response timeout, or a connection lost
// while waiting. Errors raised before writing (not bound, ctx) are known.
func outcomeUnknown(err error) bool {
	switch {
	case errors.Is(err, smpp.ErrTimeout):
		return true
	case errors.Is(err, smpp.ErrNotBound), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, smpp.ErrNotConnected), errors.Is(err, io.EOF):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}
