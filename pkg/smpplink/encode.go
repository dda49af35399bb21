package smpplink

import (
	"encoding/binary"

	"github.com/fiorix/go-smpp/smpp/encoding"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutext"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

// Single-part limits: 160 GSM 7-bit septets (an extension character such as
// € takes two), or 140 bytes of UCS-2 (70 UTF-16 units).
const (
	maxGSM7Septets = 160
	maxUCS2Bytes   = 140
)

// Per-part limits of a concatenated message. The 6-octet UDH (8-bit
// reference) takes 7 of the 160 septets over the air, leaving 153, or 6 of
// the 140 octets, leaving 134 (67 UCS-2 units). SAR parts are held to the
// same sizes, so a text splits alike either way.
const (
	partGSM7Septets = 153
	partUCS2Bytes   = 134
	maxParts        = 255 // the UDH and sar_total_segments count parts in one octet
)

// esmUDHI is the esm_class bit saying short_message starts with a UDH.
const esmUDHI = 0x40

// Split is how the parts of a long message are tied together.
type Split string

const (
	SplitUDH Split = "udh" // a concatenation UDH in each short_message (esm_class 0x40)
	SplitSAR Split = "sar" // the sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs
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

// segments cuts an encoded text into the bodies of the parts of a
// concatenated message. Unlike go-smpp's SubmitLongMsg it never cuts a GSM
// escape pair (€ would arrive as a space and an "e") or a UTF-16 surrogate
// pair (an emoji would arrive as two replacement characters): handsets decode
// each part on its own. It returns nil when the text needs more than 255 parts.
func segments(codec pdutext.Codec) [][]byte {
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
		if len(bodies) > maxParts {
			return nil
		}
	}
	return bodies
}

// split makes the parts of a long text, tied by ref in the way mode says.
// It returns nil when the text needs more than 255 parts.
func split(codec pdutext.Codec, mode Split, ref uint16) []part {
	bodies := segments(codec)
	if bodies == nil {
		return nil
	}
	parts := make([]part, len(bodies))
	for i, b := range bodies {
		p := part{dcs: codec.Type()}
		if mode == SplitSAR {
			var r [2]byte
			binary.BigEndian.PutUint16(r[:], ref)
			p.data = b
			p.tlv = pdutlv.Fields{
				pdutlv.TagSarMsgRefNum:     r[:],
				pdutlv.TagSarTotalSegments: []byte{byte(len(bodies))},
				pdutlv.TagSarSegmentSeqnum: []byte{byte(i + 1)},
			}
		} else {
			udh := []byte{0x05, 0x00, 0x03, byte(ref), byte(len(bodies)), byte(i + 1)}
			p.data = append(udh, b...)
			p.esm = esmUDHI
		}
		parts[i] = p
	}
	return parts
}

// part is one submit_sm of a long message: its short_message (UDH included
// when there is one), already encoded in the message's data_coding, and its
// esm_class and TLVs.
type part struct {
	dcs  pdutext.DataCoding
	data []byte
	esm  uint8
	tlv  pdutlv.Fields
}

func (p part) Type() pdutext.DataCoding { return p.dcs }
func (p part) Encode() []byte           { return p.data }
func (p part) Decode() []byte           { return p.data }
