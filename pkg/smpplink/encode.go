package smpplink

import (
	"github.com/fiorix/go-smpp/smpp/encoding"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutext"
)

// Single-part limits: 160 GSM 7-bit septets (an extension character such as
// € takes two), or 140 bytes of UCS-2 (70 UTF-16 units).
const (
	maxGSM7Septets = 160
	maxUCS2Bytes   = 140
)

// Encode picks the alphabet for text: GSM 03.38 7-bit when every character is
// in it (extension table included), UCS-2 otherwise. single reports whether
// it fits one submit_sm.
func Encode(text string) (codec pdutext.Codec, single bool) {
	if len(encoding.ValidateGSM7String(text)) == 0 {
		c := pdutext.GSM7(text)
		return c, len(c.Encode()) <= maxGSM7Septets
	}
	c := pdutext.UCS2(text)
	return c, len(c.Encode()) <= maxUCS2Bytes
}
