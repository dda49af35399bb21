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

// statusTable names the SMPP 3.4 command_status values a submit_sm_resp can
// carry and says which are worth another attempt: those where the SMSC or
// the bind was in trouble, not the message. Every status not marked retry,
// listed or not, is permanent: the message itself is refused, and sending it
// again would be refused again.
var statusTable = map[pdu.Status]struct {
	name  string
	retry bool
}{
	0x01: {"ESME_RINVMSGLEN", false},    // message length invalid
	0x02: {"ESME_RINVCMDLEN", false},    // command length invalid
	0x03: {"ESME_RINVCMDID", false},     // command id invalid
	0x04: {"ESME_RINVBNDSTS", true},     // incorrect bind status (we were unbound)
	0x06: {"ESME_RINVPRTFLG", false},    // priority flag invalid
	0x07: {"ESME_RINVREGDLVFLG", false}, // registered delivery flag invalid
	0x08: {"ESME_RSYSERR", true},        // system error
	0x0A: {"ESME_RINVSRCADR", false},    // source address invalid
	0x0B: {"ESME_RINVDSTADR", false},    // destination address invalid
	0x0C: {"ESME_RINVMSGID", false},     // message id invalid
	0x14: {"ESME_RMSGQFUL", true},       // message queue full
	0x15: {"ESME_RINVSERTYP", false},    // service type invalid
	0x40: {"ESME_RINVDESTFLAG", false},  // destination flag invalid
	0x42: {"ESME_RINVSUBREP", false},    // submit with replace invalid
	0x43: {"ESME_RINVESMCLASS", false},  // esm_class invalid
	0x44: {"ESME_RCNTSUBDL", false},     // cannot submit to distribution list
	0x45: {"ESME_RSUBMITFAIL", true},    // submit_sm failed (generic)
	0x48: {"ESME_RINVSRCTON", false},    // source TON invalid
	0x49: {"ESME_RINVSRCNPI", false},    // source NPI invalid
	0x50: {"ESME_RINVDSTTON", false},    // destination TON invalid
	0x51: {"ESME_RINVDSTNPI", false},    // destination NPI invalid
	0x53: {"ESME_RINVSYSTYP", false},    // system_type invalid
	0x54: {"ESME_RINVREPFLAG", false},   // replace_if_present flag invalid
	0x58: {"ESME_RTHROTTLED", true},     // throttled: Classify makes it Throttled
	0x61: {"ESME_RINVSCHED", false},     // scheduled delivery time invalid
	0x62: {"ESME_RINVEXPIRY", false},    // validity period invalid
	0x63: {"ESME_RINVDFTMSGID", false},  // predefined message id invalid
	0x64: {"ESME_RX_T_APPN", true},      // receiver temporary app error
	0x65: {"ESME_RX_P_APPN", false},     // receiver permanent app error
	0x66: {"ESME_RX_R_APPN", false},     // receiver reject message error
	0xC0: {"ESME_RINVOPTPARSTREAM", false},
	0xC1: {"ESME_ROPTPARNOTALLWD", false},
	0xC2: {"ESME_RINVPARLEN", false},
	0xC3: {"ESME_RMISSINGOPTPARAM", false},
	0xC4: {"ESME_RINVOPTPARAMVAL", false},
	0xFE: {"ESME_RDELIVERYFAILURE", true}, // transient delivery failure
	0xFF: {"ESME_RUNKNOWNERR", true},      // unknown error
}

// StatusName is the SMPP 3.4 name of a command_status, or its hex value.
func StatusName(st pdu.Status) string {
	if e, ok := statusTable[st]; ok {
		return e.name
	}
	return fmt.Sprintf("0x%08X", uint32(st))
}

// ThrottledStatus is ESME_RTHROTTLED.
const ThrottledStatus pdu.Status = 0x58

// Classify maps a go-smpp submit error to a Class: 0x58 is Throttled, the
// statuses marked retry above and every transport failure (response timeout,
// not bound, connection lost, a context ended while waiting for the window)
// are Retryable, any other command_status is Permanent.
func Classify(err error) Class {
	var st pdu.Status
	if errors.As(err, &st) {
		switch {
		case st == ThrottledStatus:
			return Throttled
		case statusTable[st].retry:
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
