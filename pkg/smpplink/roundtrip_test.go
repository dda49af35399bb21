package smpplink_test

import (
	"context"
	"strings"
	"testing"

	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

// Each text goes to the simulator, which decodes every part on its own (as a
// handset does) and puts the parts together: the text it saw must be the
// text sent, in exactly the expected number of submits, with either way of
// tying the parts (UDH or SAR TLVs).
func TestEveryAlphabetAndLengthRoundTripsThroughTheSMSC(t *testing.T) {
	cases := []struct {
		name  string
		text  string
		dcs   uint8
		parts int
	}{
		{"plain GSM", "Your code is 4821", 0, 1},
		{"GSM base characters that differ from ASCII", "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà", 0, 1},
		{"the extension table", `€ [ ] { } ~ \ ^ |`, 0, 1},
		{"160 septets are one part", strings.Repeat("a", 160), 0, 1},
		{"161 septets are two parts", strings.Repeat("a", 161), 0, 2},
		{"306 septets are two parts of 153", strings.Repeat("b", 306), 0, 2},
		{"307 septets are three parts", strings.Repeat("c", 307), 0, 3},
		{"80 euro signs (160 septets) are one part", strings.Repeat("€", 80), 0, 1},
		{"153 euro signs are three parts of 76 and one", strings.Repeat("€", 153), 0, 3},
		{"escapes at every offset never split", "x" + strings.Repeat("{€}", 60), 0, 3},
		{"Czech is UCS-2", "Příliš žluťoučký kůň úpěl ďábelské ódy", 8, 1},
		{"70 UCS-2 units are one part", strings.Repeat("ž", 70), 8, 1},
		{"71 UCS-2 units are two parts", strings.Repeat("ž", 71), 8, 2},
		{"134 UCS-2 units are two parts of 67", strings.Repeat("ř", 134), 8, 2},
		{"135 UCS-2 units are three parts", strings.Repeat("ř", 135), 8, 3},
		{"an emoji is UCS-2", "ok 😀", 8, 1},
		{"35 emoji (70 units) are one part", strings.Repeat("😀", 35), 8, 1},
		{"36 emoji are two parts of 33 and 3 (never 67 units: a pair would split)", strings.Repeat("😀", 36), 8, 2},
		{"emoji at an odd offset never split", "a" + strings.Repeat("👍🏽", 40), 8, 3},
		{"mixed scripts (184 units)", strings.Repeat("Zdravím, Привет, 你好 🎉 ", 8), 8, 3},
	}
	for _, mode := range []smpplink.Split{smpplink.SplitUDH, smpplink.SplitSAR} {
		t.Run(string(mode), func(t *testing.T) {
			sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
			cfg := config(sim.Addr())
			cfg.Split = mode
			l := open(t, cfg, nil)
			submits := 0
			for _, c := range cases {
				res, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: c.text})
				if err != nil {
					t.Fatalf("%s: submit: %v", c.name, err)
				}
				subs := sim.Submits()[submits:]
				submits += len(subs)
				if len(res.IDs) != c.parts || len(subs) != c.parts {
					t.Fatalf("%s: %d ids, %d submits; want %d parts", c.name, len(res.IDs), len(subs), c.parts)
				}
				for i, s := range subs {
					if s.DataCoding != c.dcs {
						t.Fatalf("%s: part %d data_coding %d, want %d", c.name, i+1, s.DataCoding, c.dcs)
					}
					if c.parts == 1 && s.Total != 0 || c.parts > 1 && (s.Total != c.parts || s.Seq != i+1) {
						t.Fatalf("%s: part %d is %d/%d, want %d/%d", c.name, i+1, s.Seq, s.Total, i+1, c.parts)
					}
					if udh := s.ESMClass&0x40 != 0; udh != (c.parts > 1 && mode == smpplink.SplitUDH) {
						t.Fatalf("%s: part %d esm_class %#x with split %s", c.name, i+1, s.ESMClass, mode)
					}
				}
			}
			msgs := sim.Messages()
			if len(msgs) != len(cases) || sim.PartialMessages() != 0 {
				t.Fatalf("simulator put together %d messages (%d partial), want %d", len(msgs), sim.PartialMessages(), len(cases))
			}
			for i, c := range cases {
				if msgs[i].Text != c.text || msgs[i].Parts != c.parts {
					t.Errorf("%s: the SMSC saw %q in %d parts, sent %q in %d", c.name, msgs[i].Text, msgs[i].Parts, c.text, c.parts)
				}
			}
		})
	}
}

func TestATextOfMoreThan255PartsIsRefusedBeforeAnySubmit(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{NoReceipts: true}))
	l := open(t, config(sim.Addr()), nil)
	_, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: strings.Repeat("a", 153*255+1)})
	se, ok := err.(*smpplink.SubmitError)
	if !ok || se.Class != smpplink.Permanent || se.Err != smpplink.ErrTooLong {
		t.Fatalf("err = %v, want a permanent ErrTooLong", err)
	}
	if n := len(sim.Submits()); n != 0 {
		t.Fatalf("%d submits reached the SMSC, want 0", n)
	}
	if _, err := l.Submit(context.Background(), smpplink.Short{Src: "Eshop", Dst: "+420600000001", Text: strings.Repeat("a", 153*255)}); err != nil {
		t.Fatalf("255 parts: %v", err)
	}
	if n := len(sim.Submits()); n != 255 {
		t.Fatalf("%d submits for 255 parts", n)
	}
}
