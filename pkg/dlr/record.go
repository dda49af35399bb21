// Package dlr holds the raw delivery receipt the egress stage stores in the
// SMS_DLR stream and the parser the receipts stage reads it with.
//
// Egress stores a Record before it sends deliver_sm_resp, so a receipt is never
// lost to a crash; receipts calls Parse, and correlates Receipt.ID with the
// submit_sm_resp message id through CanonicalID and Key, reading the IndexEntry
// egress wrote under that key.
package dlr

import "time"

// Record is one deliver_sm receipt as received from an SMSC, stored as JSON in
// SMS_DLR (subject sms.dlr.<link>). It keeps the PDU's fields unparsed, so a
// better parser can replay the stream.
type Record struct {
	Link         string    `json:"link"`
	ReceivedAt   time.Time `json:"received_at"`
	Source       string    `json:"source,omitempty"` // deliver_sm source_addr (the handset)
	Dest         string    `json:"dest,omitempty"`
	ESMClass     uint8     `json:"esm_class"`
	DataCoding   uint8     `json:"data_coding"`
	Text         []byte    `json:"text,omitempty"`          // short_message bytes as received (JSON base64)
	ReceiptedID  string    `json:"receipted_id,omitempty"`  // TLV receipted_message_id 0x001E, NUL stripped
	MessageState int       `json:"message_state,omitempty"` // TLV message_state 0x0427, 0 when absent
	NetworkError []byte    `json:"network_error,omitempty"` // TLV network_error_code 0x0423 raw (3 bytes)
}
