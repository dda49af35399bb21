package smpplink

import (
	"encoding/binary"
	"unicode/utf16"

	"github.com/fiorix/go-smpp/smpp/encoding"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

// DecodeText decodes a short_message body (UDH already removed) by its
// data_coding: 8 as UCS-2 (UTF-16BE; a lone surrogate becomes U+FFFD, an
// odd last byte is dropped), 0 as unpacked GSM 03.38 septets (extension
// table included; a septet outside the alphabet becomes '?'), 1 as ASCII and
// anything else as Latin-1. It never fails: a bad byte gives a replacement
// character, not an error.
func DecodeText(b []byte, dataCoding uint8) string {
	switch dataCoding {
	case 0x08:
		u := make([]uint16, 0, len(b)/2)
		for i := 0; i+1 < len(b); i += 2 {
			u = append(u, binary.BigEndian.Uint16(b[i:]))
		}
		return string(utf16.Decode(u))
	case 0x00:
		clean := make([]byte, len(b))
		for i, c := range b {
			clean[i] = c & 0x7F // a septet has 7 bits
		}
		if out, err := encoding.GSM7(false).NewDecoder().Bytes(clean); err == nil {
			return string(out)
		}
	}
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
		if dataCoding == 0x01 && c >= 0x80 {
			r[i] = '?'
		}
	}
	return string(r)
}

// Concat is the concatenation of one part of a long message.
type Concat struct {
	Ref   int `json:"ref"`
	Total int `json:"total"`
	Seq   int `json:"seq"`
}

// DecodeShortMessage decodes the text of a submit_sm or deliver_sm (its
// short_message, or message_payload when that is empty) by its data_coding,
// and reads its concatenation: the UDH when esm_class has UDHI, else the SAR
// TLVs. Concat is zero for a message that is not a part.
func DecodeShortMessage(p pdu.Body) (string, Concat) {
	f := p.Fields()
	var sm []byte
	var dcs, esm uint8
	if v := f[pdufield.ShortMessage]; v != nil {
		sm = v.Bytes()
	}
	if v := f[pdufield.DataCoding]; v != nil && len(v.Bytes()) > 0 {
		dcs = v.Bytes()[0]
	}
	if v := f[pdufield.ESMClass]; v != nil && len(v.Bytes()) > 0 {
		esm = v.Bytes()[0]
	}
	t := p.TLVFields()
	if v, ok := t[pdutlv.TagMessagePayload]; ok && v != nil && len(sm) == 0 {
		sm = v.Bytes()
	}
	var c Concat
	if esm&esmUDHI != 0 {
		c, sm = CutUDH(sm)
	} else {
		r, n, q := tlvBytes(t, pdutlv.TagSarMsgRefNum), tlvBytes(t, pdutlv.TagSarTotalSegments), tlvBytes(t, pdutlv.TagSarSegmentSeqnum)
		if len(r) == 2 && len(n) == 1 && len(q) == 1 {
			c = Concat{Ref: int(binary.BigEndian.Uint16(r)), Total: int(n[0]), Seq: int(q[0])}
		}
	}
	return DecodeText(sm, dcs), c
}

func tlvBytes(t pdutlv.Map, tag pdutlv.Tag) []byte {
	if v, ok := t[tag]; ok && v != nil {
		return v.Bytes()
	}
	return nil
}

// CutUDH separates a short_message with a UDH (esm_class 0x40) into the
// concatenation it carries (8- or 16-bit reference; zero when none) and the
// body. A UDH longer than the message gives an empty body.
func CutUDH(sm []byte) (Concat, []byte) {
	if len(sm) == 0 {
		return Concat{}, nil
	}
	n := int(sm[0]) + 1
	if n > len(sm) {
		return Concat{}, nil
	}
	udh := sm[1:n]
	for i := 0; i+1 < len(udh); {
		iei, l := udh[i], int(udh[i+1])
		d := udh[i+2:]
		if l > len(d) {
			break
		}
		d = d[:l]
		switch {
		case iei == 0x00 && l == 3:
			return Concat{Ref: int(d[0]), Total: int(d[1]), Seq: int(d[2])}, sm[n:]
		case iei == 0x08 && l == 4:
			return Concat{Ref: int(binary.BigEndian.Uint16(d)), Total: int(d[2]), Seq: int(d[3])}, sm[n:]
		}
		i += 2 + l
	}
	return Concat{}, sm[n:]
}
