package smscsim

import (
	"fmt"
	"unicode/utf16"

	"github.com/fiorix/go-smpp/smpp/encoding"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
)

// maxShortMessage is the largest short_message SMPP 3.4 allows (sm_length is one octet).
const maxShortMessage = 254

// moPDU builds a mobile-originated deliver_sm (esm_class 0). Text in the GSM 03.38 alphabet is sent as
// unpacked septets with data_coding 0, anything else as UCS2 (data_coding 8). Numeric addresses ("+" allowed) get
// TON international / NPI ISDN, others TON alphanumeric.
func moPDU(src, dst, text string) (pdu.Body, error) {
	sm, dc := encodeText(text)
	if len(sm) > maxShortMessage {
		return nil, fmt.Errorf("smscsim: mo text is %d bytes encoded, max %d", len(sm), maxShortMessage)
	}
	p := pdu.NewDeliverSM()
	f := p.Fields()
	srcTON, srcNPI := addrType(src)
	dstTON, dstNPI := addrType(dst)
	_ = f.Set(pdufield.SourceAddrTON, srcTON)
	_ = f.Set(pdufield.SourceAddrNPI, srcNPI)
	_ = f.Set(pdufield.SourceAddr, src)
	_ = f.Set(pdufield.DestAddrTON, dstTON)
	_ = f.Set(pdufield.DestAddrNPI, dstNPI)
	_ = f.Set(pdufield.DestinationAddr, dst)
	_ = f.Set(pdufield.ESMClass, uint8(0))
	_ = f.Set(pdufield.DataCoding, dc)
	_ = f.Set(pdufield.ShortMessage, sm)
	noUDH(p)
	return p, nil
}

// encodeText returns text as unpacked GSM 03.38 septets with data_coding 0 when every character
// is in that alphabet (extension table included), else as UCS2 (UTF-16BE) with 8.
func encodeText(text string) ([]byte, uint8) {
	if len(encoding.ValidateGSM7String(text)) == 0 {
		if b, err := encoding.GSM7(false).NewEncoder().Bytes([]byte(text)); err == nil {
			return b, 0
		}
	}
	u := utf16.Encode([]rune(text))
	b := make([]byte, 0, 2*len(u))
	for _, v := range u {
		b = append(b, byte(v>>8), byte(v))
	}
	return b, 8
}

// addrType returns TON/NPI for an address: 1/1 for digits with an optional leading "+", else 5/0.
func addrType(a string) (ton, npi uint8) {
	if a == "" {
		return 0, 0
	}
	digits := a
	if digits[0] == '+' {
		digits = digits[1:]
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 5, 0
		}
	}
	if digits == "" {
		return 5, 0
	}
	return 1, 1
}
