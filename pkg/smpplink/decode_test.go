package smpplink

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Every part of a long text, decoded on its own as a handset does, gives
// back its share of the text: no character is cut, lost or changed, and no
// part is over its size.
func FuzzSplitPartsDecodeBackToTheText(f *testing.F) {
	for _, s := range []string{"", "hi", strings.Repeat("a", 161), "aa" + strings.Repeat("€", 100), strings.Repeat("ž", 66) + "😀😀",
		strings.Repeat("{€}", 70), "a" + strings.Repeat("👍🏽", 40), "Příliš žluťoučký kůň", "\x00\x7f\u00a0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if !utf8.ValidString(text) || strings.ContainsRune(text, utf8.RuneError) || len(text) > 4000 {
			return
		}
		codec, _ := Encode(text)
		dcs := uint8(codec.Type())
		var got strings.Builder
		for i, p := range split(codec, SplitUDH, 7) {
			c, body := CutUDH(p.data)
			limit := partGSM7Septets
			if dcs == 8 {
				limit = partUCS2Bytes
			}
			if len(body) > limit || c.Seq != i+1 || c.Ref != 7 {
				t.Fatalf("part %d: %d bytes (limit %d), concat %+v", i+1, len(body), limit, c)
			}
			got.WriteString(DecodeText(body, dcs))
		}
		if got.String() != text {
			t.Fatalf("parts decode to %q, want %q", got.String(), text)
		}
	})
}

func FuzzDecodeTextNeverFails(f *testing.F) {
	f.Add([]byte("hello"), uint8(0))
	f.Add([]byte{0x1B, 0x65, 0x1B}, uint8(0))
	f.Add([]byte{0xD8, 0x3D, 0xDE, 0x00, 0xD8}, uint8(8))
	f.Add([]byte{0xFF, 0x80}, uint8(1))
	f.Add([]byte{0xE9}, uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, dcs uint8) {
		s := DecodeText(b, dcs)
		if !utf8.ValidString(s) {
			t.Fatalf("DecodeText(% x, %d) = %q: not UTF-8", b, dcs, s)
		}
	})
}

func FuzzCutUDH(f *testing.F) {
	f.Add([]byte{0x05, 0x00, 0x03, 0x2A, 0x02, 0x01, 'h', 'i'})
	f.Add([]byte{0x06, 0x08, 0x04, 0x01, 0x02, 0x03, 0x01, 'x'})
	f.Add([]byte{0x09, 0x00})
	f.Add([]byte{0x03, 0x00, 0x09, 0x01})
	f.Fuzz(func(t *testing.T, sm []byte) {
		c, body := CutUDH(sm)
		if len(body) > len(sm) || c.Total < 0 || c.Seq < 0 {
			t.Fatalf("CutUDH(% x) = %+v, % x", sm, c, body)
		}
	})
}

func TestDecodeText(t *testing.T) {
	cases := []struct {
		b    []byte
		dcs  uint8
		want string
	}{
		{[]byte{0x00, 0x02, 0x11, 0x1B, 0x65, 0x1B, 0x3C}, 0, "@$_€["},
		{[]byte{0x00, 0x41, 0xD8, 0x3D, 0xDE, 0x00}, 8, "A😀"},
		{[]byte{0xD8, 0x3D, 0x00, 0x41}, 8, "\uFFFDA"}, // a lone high surrogate
		{[]byte{0xE9, 0x74, 0xE9}, 3, "été"},
		{[]byte("STOP"), 1, "STOP"},
	}
	for _, c := range cases {
		if got := DecodeText(c.b, c.dcs); got != c.want {
			t.Errorf("DecodeText(% x, %d) = %q, want %q", c.b, c.dcs, got, c.want)
		}
	}
	c, body := CutUDH([]byte{0x05, 0x00, 0x03, 0x2A, 0x02, 0x01, 'h', 'i'})
	if c != (Concat{Ref: 0x2A, Total: 2, Seq: 1}) || string(body) != "hi" {
		t.Errorf("CutUDH = %+v %q", c, body)
	}
}
