// Package mo is the mobile-originated message as stored on
// sms.inbound.<link> (stream SMS_INBOUND): the contract between the egress
// stage, which receives it from an SMSC, and whoever reads replies (the
// policy stage's STOP/START reader, a customer's own consumer).
package mo

import (
	"time"

	"github.com/smsflow/smsflow/pkg/smpplink"
)

// Message is one deliver_sm that is not a receipt, its text decoded by its
// data_coding (GSM 03.38 or UCS-2). One part of a long MO carries Part;
// joining the parts is the consumer's business.
type Message struct {
	Link       string           `json:"link"`
	From       string           `json:"from"` // the handset; "+" added when the SMSC said it is international
	To         string           `json:"to"`
	Text       string           `json:"text"`
	DataCoding uint8            `json:"data_coding"`
	Part       *smpplink.Concat `json:"part,omitempty"`
	ReceivedAt time.Time        `json:"received_at"`
}
