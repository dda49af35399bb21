package smpplink_test

import (
	"strings"
	"testing"

	"github.com/fiorix/go-smpp/smpp/pdu/pdutext"

	"github.com/smsflow/smsflow/pkg/smpplink"
)

func TestEncodePicksTheAlphabetAndCountsParts(t *testing.T) {
	cases := []struct {
		name   string
		text   string
		want   pdutext.DataCoding
		single bool
	}{
		{"ASCII is GSM7", "Your code is 4821", pdutext.DefaultType, true},
		{"the extension table is GSM7", `€ [ ] { } ~ \ ^ |`, pdutext.DefaultType, true},
		{"160 plain septets fit one part", strings.Repeat("a", 160), pdutext.DefaultType, true},
		{"161 plain septets do not", strings.Repeat("a", 161), pdutext.DefaultType, false},
		{"80 euro signs (2 septets each) fit one part", strings.Repeat("€", 80), pdutext.DefaultType, true},
		{"81 euro signs do not", strings.Repeat("€", 81), pdutext.DefaultType, false},
		{"Czech diacritics are UCS-2", "Příliš žluťoučký", pdutext.UCS2Type, true},
		{"an emoji is UCS-2", "ok 😀", pdutext.UCS2Type, true},
		{"70 UCS-2 units fit one part", strings.Repeat("ž", 70), pdutext.UCS2Type, true},
		{"71 UCS-2 units do not", strings.Repeat("ž", 71), pdutext.UCS2Type, false},
		{"35 emoji (70 units) fit one part", strings.Repeat("😀", 35), pdutext.UCS2Type, true},
		{"36 emoji (72 units) do not", strings.Repeat("😀", 36), pdutext.UCS2Type, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			codec, single := smpplink.Encode(c.text)
			if codec.Type() != c.want || single != c.single {
				t.Fatalf("Encode(%q) = type %v, single %v; want type %v, single %v", c.text, codec.Type(), single, c.want, c.single)
			}
		})
	}
}
