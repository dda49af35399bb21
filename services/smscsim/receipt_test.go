package smscsim

import (
	"bytes"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

func TestReceiptText(t *testing.T) {
	sub := time.Date(2025, 3, 4, 5, 6, 59, 0, time.UTC)
	done := time.Date(2025, 3, 4, 5, 7, 1, 0, time.UTC)
	cases := []struct {
		stat string
		want string
	}{
		{StatDelivered, "id:AB-1 sub:001 dlvrd:001 submit date:2503040506 done date:2503040507 stat:DELIVRD err:000 text:hello"},
		{StatUndeliverable, "id:AB-1 sub:001 dlvrd:000 submit date:2503040506 done date:2503040507 stat:UNDELIV err:005 text:hello"},
		{StatExpired, "id:AB-1 sub:001 dlvrd:000 submit date:2503040506 done date:2503040507 stat:EXPIRED err:003 text:hello"},
		{StatRejected, "id:AB-1 sub:001 dlvrd:000 submit date:2503040506 done date:2503040507 stat:REJECTD err:008 text:hello"},
		{"BOGUS", "id:AB-1 sub:001 dlvrd:000 submit date:2503040506 done date:2503040507 stat:BOGUS err:007 text:hello"},
	}
	for _, c := range cases {
		t.Run(c.stat, func(t *testing.T) {
			if got := receiptText("AB-1", c.stat, sub, done, "hello"); got != c.want {
				t.Fatalf("receiptText:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestMessageStateFollowsSMPP34(t *testing.T) {
	want := map[string]uint8{StatDelivered: 2, StatExpired: 3, StatDeleted: 4, StatUndeliverable: 5,
		StatAccepted: 6, StatUnknown: 7, StatRejected: 8, "": 7}
	for stat, st := range want {
		if got := messageState(stat); got != st {
			t.Errorf("messageState(%q) = %d, want %d", stat, got, st)
		}
	}
}

func TestPreview(t *testing.T) {
	ucs2, _ := encodeText("Příliš žluťoučký kůň úpěl ďábelské ódy")
	cases := []struct {
		name    string
		sm      []byte
		dc, esm uint8
		want    string
	}{
		{"short text is kept whole", []byte("hi"), 0, 0, "hi"},
		{"long text is cut to 20 characters", []byte("0123456789abcdefghijKLMN"), 0, 0, "0123456789abcdefghij"},
		{"control characters become dots", []byte("a\nb\x00c"), 0, 0, "a.b.c"},
		{"UCS2 is decoded and non-ASCII becomes ?", ucs2, 8, 0, "P??li? ?lu?ou?k? k??"},
		{"the UDH is skipped", append([]byte{5, 0, 3, 1, 2, 1}, "part one"...), 0, 0x40, "part one"},
		{"a UDH longer than the message leaves nothing", []byte{9, 1, 2}, 0, 0x40, ""},
		{"invalid UTF-8 becomes ?", []byte{0xff, 'x'}, 0, 0, "?x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := preview(c.sm, c.dc, c.esm); got != c.want {
				t.Fatalf("preview = %q, want %q", got, c.want)
			}
		})
	}
}

// TestReceiptPDURoundTrips proves the deliver_sm survives go-smpp's own encoder and decoder,
// including the UDH-length byte go-smpp would otherwise add.
func TestReceiptPDURoundTrips(t *testing.T) {
	r := &receipt{id: "XYZ-42", src: "smsflow", dst: "+420777000111", srcTON: 5, dstTON: 1, dstNPI: 1,
		stat: StatUndeliverable, text: "hello", submitAt: time.Now(), doneAt: time.Now()}
	var b bytes.Buffer
	if err := r.pdu(0x70000001).SerializeTo(&b); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	p, err := pdu.Decode(&b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if p.Header().ID != pdu.DeliverSMID || p.Header().Seq != 0x70000001 {
		t.Fatalf("header = %+v, want deliver_sm seq 0x70000001", p.Header())
	}
	f := p.Fields()
	want := receiptText(r.id, r.stat, r.submitAt, r.doneAt, r.text)
	if got := f[pdufield.ShortMessage].String(); got != want {
		t.Fatalf("short_message = %q, want %q", got, want)
	}
	if got := f[pdufield.SourceAddr].String(); got != r.dst {
		t.Fatalf("source_addr = %q, want the submit's destination %q", got, r.dst)
	}
	if got := f[pdufield.DestinationAddr].String(); got != r.src {
		t.Fatalf("destination_addr = %q, want the submit's source %q", got, r.src)
	}
	if got := fixed(p, pdufield.ESMClass); got != 0x04 {
		t.Fatalf("esm_class = %#x, want 0x04", got)
	}
	if got := fixed(p, pdufield.SourceAddrTON); got != 1 {
		t.Fatalf("source_addr_ton = %d, want the submit's dest TON 1", got)
	}
	tlv := p.TLVFields()
	if got := tlv[pdutlv.TagReceiptedMessageID]; got == nil || string(got.Bytes()) != "XYZ-42\x00" {
		t.Fatalf("receipted_message_id = %v, want C-string XYZ-42", got)
	}
	if got := tlv[pdutlv.TagMessageStateOption]; got == nil || !bytes.Equal(got.Bytes(), []byte{5}) {
		t.Fatalf("message_state = %v, want [5]", got)
	}
}

func TestMOPDU(t *testing.T) {
	cases := []struct {
		name   string
		text   string
		wantDC uint8
		wantSM []byte
	}{
		{"ASCII goes as data_coding 0", "STOP", 0, []byte("STOP")},
		{"anything else goes as UCS2", "ž", 8, []byte{0x01, 0x7e}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := moPDU("+420777000111", "1234", c.text)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := p.SerializeTo(&b); err != nil {
				t.Fatal(err)
			}
			d, err := pdu.Decode(&b)
			if err != nil {
				t.Fatal(err)
			}
			if got := fixed(d, pdufield.DataCoding); got != c.wantDC {
				t.Fatalf("data_coding = %d, want %d", got, c.wantDC)
			}
			if got := fieldBytes(d, pdufield.ShortMessage); !bytes.Equal(got, c.wantSM) {
				t.Fatalf("short_message = %x, want %x", got, c.wantSM)
			}
			if got := fixed(d, pdufield.ESMClass); got != 0 {
				t.Fatalf("esm_class = %#x, want 0", got)
			}
		})
	}
	if _, err := moPDU("a", "b", string(make([]byte, 255))); err == nil {
		t.Fatal("a 255-byte text must be refused")
	}
}

func TestAddrType(t *testing.T) {
	cases := []struct {
		addr     string
		ton, npi uint8
	}{{"+420777000111", 1, 1}, {"420777", 1, 1}, {"Shop", 5, 0}, {"+", 5, 0}, {"", 0, 0}}
	for _, c := range cases {
		if ton, npi := addrType(c.addr); ton != c.ton || npi != c.npi {
			t.Errorf("addrType(%q) = %d/%d, want %d/%d", c.addr, ton, npi, c.ton, c.npi)
		}
	}
}
