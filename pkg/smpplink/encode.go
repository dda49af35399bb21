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

// Per-part limits of a concatenated message, whose 7-byte UDH (16-bit
// reference) takes 8 of the 160 septets, or 7 of the 140 octets (keeping
// UCS-2 parts to whole units).
const (
	partGSM7Septets = 152
	partUCS2Bytes   = 132
	maxParts        = 255 // the UDH counts parts in one octet
)

// esmUDHI is the esm_class bit saying short_message starts with a UDH.
const esmUDHI = 0x40

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

// split cuts an encoded text into the short_message of each part of a
// concatenated message, each led by a UDH with reference ref. Unlike
// go-smpp's SubmitLongMsg it never cuts a GSM escape pair (€ would arrive
// as a space and an "e") or a UTF-16 surrogate pair (an emoji would arrive
// as two replacement characters): handsets decode each part on its own.
// It returns nil when the text needs more than 255 parts.
func split(codec pdutext.Codec, ref uint16) [][]byte {
	data := codec.Encode()
	var bodies [][]byte
	for start := 0; start < len(data); {
		end := start
		if codec.Type() == pdutext.UCS2Type {
			end = min(start+partUCS2Bytes, len(data))
			if end < len(data) && data[end-2]&0xFC == 0xD8 { // ends in a high surrogate
				end -= 2
			}
		} else {
			for end < len(data) {
				n := 1
				if data[end] == 0x1B { // escape: the next septet belongs to it
					n = min(2, len(data)-end)
				}
				if end+n-start > partGSM7Septets {
					break
				}
				end += n
			}
		}
		bodies = append(bodies, data[start:end])
		start = end
	}
	if len(bodies) > maxParts {
		return nil
	}
	parts := make([][]byte, len(bodies))
	for i, b := range bodies {
		udh := []byte{0x06, 0x08, 0x04, byte(ref >> 8), byte(ref), byte(len(bodies)), byte(i + 1)}
		parts[i] = append(udh, b...)
	}
	return parts
}

// part is the short_message of one part, UDH included, already encoded in
// the message's data_coding.
type part struct {
	dcs  pdutext.DataCoding
	data []byte
}

func (p part) Type() pdutext.DataCoding { return p.dcs }
func (p part) Encode() []byte           { return p.data }
func (p part) Decode() []byte           { return p.data }
