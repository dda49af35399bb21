package dlr

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

func at(y, mo, d, h, mi, s int) time.Time {
	return time.Date(y, time.Month(mo), d, h, mi, s, 0, time.UTC)
}

var parseTextCases = []struct {
	name string
	text string
	want Receipt // zero when an error wrapping ErrNotReceipt is expected
}{
	{
		name: "the SMPP 3.4 Appendix B form is read field by field",
		text: "id:0123456789 sub:001 dlvrd:001 submit date:2401151030 done date:2401151031 stat:DELIVRD err:000 Text:Your code is 4821",
		want: Receipt{ID: "0123456789", Sub: 1, Dlvrd: 1, SubmitDate: at(2024, 1, 15, 10, 30, 0), DoneDate: at(2024, 1, 15, 10, 31, 0),
			Stat: "DELIVRD", Err: "000", Text: "Your code is 4821", State: Delivered},
	},
	{
		name: "upper-case keys are read",
		text: "ID:ABC123 SUB:001 DLVRD:000 SUBMIT DATE:2401151030 DONE DATE:2401151130 STAT:UNDELIV ERR:034 TEXT:hello",
		want: Receipt{ID: "ABC123", Sub: 1, SubmitDate: at(2024, 1, 15, 10, 30, 0), DoneDate: at(2024, 1, 15, 11, 30, 0),
			Stat: "UNDELIV", Err: "034", Text: "hello", State: Undelivered},
	},
	{
		name: "12-digit dates carry seconds",
		text: "id:77 sub:001 dlvrd:001 submit date:240115103005 done date:240115103159 stat:DELIVRD err:000 text:",
		want: Receipt{ID: "77", Sub: 1, Dlvrd: 1, SubmitDate: at(2024, 1, 15, 10, 30, 5), DoneDate: at(2024, 1, 15, 10, 31, 59),
			Stat: "DELIVRD", Err: "000", State: Delivered},
	},
	{
		name: "a missing err leaves Err empty",
		text: "id:5 sub:001 dlvrd:001 submit date:2401151030 done date:2401151031 stat:DELIVRD text:hi",
		want: Receipt{ID: "5", Sub: 1, Dlvrd: 1, SubmitDate: at(2024, 1, 15, 10, 30, 0), DoneDate: at(2024, 1, 15, 10, 31, 0),
			Stat: "DELIVRD", Text: "hi", State: Delivered},
	},
	{
		name: "text swallows the rest, including a stat: inside it",
		text: "id:9 stat:DELIVRD err:000 text:stat:UNDELIV id:1 err:999",
		want: Receipt{ID: "9", Stat: "DELIVRD", Err: "000", Text: "stat:UNDELIV id:1 err:999", State: Delivered},
	},
	{
		name: "leading zeros in the id are kept",
		text: "id:0000012345 sub:001 dlvrd:001 stat:DELIVRD err:000",
		want: Receipt{ID: "0000012345", Sub: 1, Dlvrd: 1, Stat: "DELIVRD", Err: "000", State: Delivered},
	},
	{
		name: "keys come in any order",
		text: "stat:EXPIRED err:000 done date:2401161030 id:a1b2c3",
		want: Receipt{ID: "a1b2c3", DoneDate: at(2024, 1, 16, 10, 30, 0), Stat: "EXPIRED", Err: "000", State: Expired},
	},
	{
		name: "extra spaces around keys and values are ignored",
		text: "  id:   42    sub: 1   dlvrd:1  submit  date: 2401151030   stat :  REJECTD   err: 0   ",
		want: Receipt{ID: "42", Sub: 1, Dlvrd: 1, SubmitDate: at(2024, 1, 15, 10, 30, 0), Stat: "REJECTD", Err: "0", State: Rejected},
	},
	{
		name: "underscored and joined date keys are read",
		text: "id:1 submit_date:2401151030 donedate:2401151031 stat:DELIVRD",
		want: Receipt{ID: "1", SubmitDate: at(2024, 1, 15, 10, 30, 0), DoneDate: at(2024, 1, 15, 10, 31, 0), Stat: "DELIVRD", State: Delivered},
	},
	{
		name: "id and stat alone are a receipt",
		text: "id:x stat:ENROUTE",
		want: Receipt{ID: "x", Stat: "ENROUTE", State: Enroute},
	},
	{
		name: "fields separated by newlines and ended by NULs are read",
		text: "id:3\nstat:DELIVRD\r\nerr:000\x00\x00",
		want: Receipt{ID: "3", Stat: "DELIVRD", Err: "000", State: Delivered},
	},
	{
		name: "a key inside a word is not a key",
		text: "paid:100 id:7 prestat:UNDELIV stat:DELIVRD",
		want: Receipt{ID: "7", Stat: "DELIVRD", State: Delivered},
	},
	{
		name: "the first of a repeated key wins",
		text: "id:1 id:2 stat:DELIVRD stat:UNDELIV",
		want: Receipt{ID: "1", Stat: "DELIVRD", State: Delivered},
	},
	{
		name: "an impossible date is left zero",
		text: "id:1 submit date:2413451030 done date:24011510 stat:DELIVRD",
		want: Receipt{ID: "1", Stat: "DELIVRD", State: Delivered},
	},
	{
		name: "non-numeric sub and dlvrd are left zero",
		text: "id:1 sub:one dlvrd:-1 stat:DELIVRD",
		want: Receipt{ID: "1", Stat: "DELIVRD", State: Delivered},
	},
	{name: "a lower-case stat maps like upper case", text: "id:1 stat:delivrd", want: Receipt{ID: "1", Stat: "delivrd", State: Delivered}},
	{name: "DELETED is undelivered", text: "id:1 stat:DELETED", want: Receipt{ID: "1", Stat: "DELETED", State: Undelivered}},
	{name: "ACCEPTD is enroute", text: "id:1 stat:ACCEPTD", want: Receipt{ID: "1", Stat: "ACCEPTD", State: Enroute}},
	{name: "UNKNOWN is unknown", text: "id:1 stat:UNKNOWN", want: Receipt{ID: "1", Stat: "UNKNOWN", State: Unknown}},
	{name: "an unlisted stat is unknown", text: "id:1 stat:DELIVERED", want: Receipt{ID: "1", Stat: "DELIVERED", State: Unknown}},

	{name: "empty text is not a receipt", text: ""},
	{name: "an ordinary message is not a receipt", text: "Hello, see you at 5?"},
	{name: "a receipt without id is not a receipt", text: "sub:001 dlvrd:001 stat:DELIVRD err:000"},
	{name: "a receipt with an empty id is not a receipt", text: "id: stat:DELIVRD"},
	{name: "a receipt without stat is not a receipt", text: "id:123 sub:001 dlvrd:001 err:000"},
	{name: "a stat after text: is text, so no stat is not a receipt", text: "id:123 text:hi stat:DELIVRD"},
}

func TestParseText(t *testing.T) {
	for _, tc := range parseTextCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseText(tc.text)
			if tc.want.ID == "" {
				if !errors.Is(err, ErrNotReceipt) {
					t.Fatalf("ParseText(%q) = %+v, %v; want an error wrapping ErrNotReceipt", tc.text, got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseText(%q)\n got %+v, %v\nwant %+v", tc.text, got, err, tc.want)
			}
		})
	}
}

func utf16be(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u>>8), byte(u))
	}
	return b
}

var parseCases = []struct {
	name string
	rec  Record
	want Receipt // zero when an error wrapping ErrNotReceipt is expected
}{
	{
		name: "a text-only record is parsed from its text",
		rec:  Record{Link: "cz1", ESMClass: 0x04, Text: []byte("id:abc sub:001 dlvrd:001 stat:DELIVRD err:000 text:hi")},
		want: Receipt{ID: "abc", Sub: 1, Dlvrd: 1, Stat: "DELIVRD", Err: "000", Text: "hi", State: Delivered},
	},
	{
		name: "the receipted_message_id TLV wins over the text id",
		rec:  Record{Text: []byte("id:123 stat:DELIVRD"), ReceiptedID: "7B"},
		want: Receipt{ID: "7B", Stat: "DELIVRD", State: Delivered},
	},
	{
		name: "the message_state TLV wins over the text stat",
		rec:  Record{Text: []byte("id:123 stat:DELIVRD err:000"), MessageState: 5},
		want: Receipt{ID: "123", Stat: "DELIVRD", Err: "000", State: Undelivered},
	},
	{
		name: "TLVs alone are a receipt, with Stat named from message_state",
		rec:  Record{ReceiptedID: "abc\x00", MessageState: 2},
		want: Receipt{ID: "abc", Stat: "DELIVRD", State: Delivered},
	},
	{
		name: "an id TLV without state is an unknown receipt",
		rec:  Record{ReceiptedID: "abc"},
		want: Receipt{ID: "abc", State: Unknown},
	},
	{
		name: "an id TLV with a partial text takes its other fields",
		rec:  Record{ReceiptedID: "abc", MessageState: 8, Text: []byte("done date:2401151031 err:011")},
		want: Receipt{ID: "abc", DoneDate: at(2024, 1, 15, 10, 31, 0), Stat: "REJECTD", Err: "011", State: Rejected},
	},
	{
		name: "an undefined message_state leaves the text state",
		rec:  Record{Text: []byte("id:1 stat:EXPIRED"), MessageState: 9},
		want: Receipt{ID: "1", Stat: "EXPIRED", State: Expired},
	},
	{
		name: "the network_error_code TLV gives Err when the text has none",
		rec:  Record{ReceiptedID: "1", MessageState: 5, NetworkError: []byte{0x03, 0x01, 0x02}},
		want: Receipt{ID: "1", Stat: "UNDELIV", Err: "258", State: Undelivered},
	},
	{
		name: "the text err is kept over the network_error_code TLV",
		rec:  Record{Text: []byte("id:1 stat:UNDELIV err:001"), NetworkError: []byte{0x03, 0x00, 0x22}},
		want: Receipt{ID: "1", Stat: "UNDELIV", Err: "001", State: Undelivered},
	},
	{
		name: "a one-byte network_error_code TLV is ignored",
		rec:  Record{ReceiptedID: "1", NetworkError: []byte{0x03}},
		want: Receipt{ID: "1", State: Unknown},
	},
	{
		name: "a UCS-2 text with data_coding 8 is decoded",
		rec:  Record{DataCoding: 0x08, Text: utf16be("id:ff01 stat:DELIVRD err:000 text:Příliš")},
		want: Receipt{ID: "ff01", Stat: "DELIVRD", Err: "000", Text: "Příliš", State: Delivered},
	},
	{name: "a record with neither id TLV nor receipt text is not a receipt", rec: Record{Link: "cz1", Text: []byte("STOP")}},
	{name: "a message_state without an id is not a receipt", rec: Record{MessageState: 2}},
	{name: "an id TLV of only NULs and spaces is no id", rec: Record{ReceiptedID: " \x00", MessageState: 2}},
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.rec)
			if tc.want.ID == "" {
				if !errors.Is(err, ErrNotReceipt) {
					t.Fatalf("Parse(%+v) = %+v, %v; want an error wrapping ErrNotReceipt", tc.rec, got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse(%+v)\n got %+v, %v\nwant %+v", tc.rec, got, err, tc.want)
			}
		})
	}
}

func TestParseMapsEveryMessageState(t *testing.T) {
	want := map[int]State{1: Enroute, 2: Delivered, 3: Expired, 4: Undelivered, 5: Undelivered, 6: Enroute, 7: Unknown, 8: Rejected}
	for ms, st := range want {
		got, err := Parse(Record{ReceiptedID: "1", MessageState: ms})
		if err != nil || got.State != st {
			t.Errorf("message_state %d: got %q, %v; want %q", ms, got.State, err, st)
		}
	}
}

func TestFinalStates(t *testing.T) {
	final := map[State]bool{Delivered: true, Undelivered: true, Expired: true, Rejected: true, Enroute: false, Unknown: false, "": false}
	for s, want := range final {
		if s.Final() != want {
			t.Errorf("%q.Final() = %v, want %v", s, !want, want)
		}
	}
}

func TestRecordJSONUsesTheStreamFieldNames(t *testing.T) {
	r := Record{Link: "cz1", ReceivedAt: at(2026, 1, 2, 3, 4, 5), Source: "420600000001", Dest: "Eshop", ESMClass: 4,
		Text: []byte("id:1 stat:DELIVRD"), ReceiptedID: "1", MessageState: 2, NetworkError: []byte{3, 0, 1}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"link":"cz1","received_at":"2026-01-02T03:04:05Z","source":"420600000001","dest":"Eshop","esm_class":4,"data_coding":0,` +
		`"text":"aWQ6MSBzdGF0OkRFTElWUkQ=","receipted_id":"1","message_state":2,"network_error":"AwAB"}`
	if string(b) != want {
		t.Fatalf("json\n got %s\nwant %s", b, want)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip = %+v, %v; want %+v", back, err, r)
	}
	b, _ = json.Marshal(Record{Link: "cz1"})
	if want := `{"link":"cz1","received_at":"0001-01-01T00:00:00Z","esm_class":0,"data_coding":0}`; string(b) != want {
		t.Fatalf("empty record json = %s, want %s", b, want)
	}
}

func validState(s State) bool {
	switch s {
	case Delivered, Undelivered, Expired, Rejected, Enroute, Unknown:
		return true
	}
	return false
}

func FuzzParseText(f *testing.F) {
	for _, tc := range parseTextCases {
		f.Add(tc.text)
	}
	for _, tc := range parseCases {
		f.Add(string(tc.rec.Text))
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := ParseText(text)
		if err != nil {
			if !errors.Is(err, ErrNotReceipt) {
				t.Fatalf("ParseText(%q) error %v does not wrap ErrNotReceipt", text, err)
			}
			return
		}
		if r.ID == "" || r.Stat == "" || !validState(r.State) {
			t.Fatalf("ParseText(%q) = %+v: want an id, a stat and a known state", text, r)
		}
		if strings.ContainsFunc(r.ID, isSpaceOrNUL) {
			t.Fatalf("ParseText(%q) id %q holds white space", text, r.ID)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		r := tc.rec
		f.Add(r.Text, r.ReceiptedID, r.MessageState, r.NetworkError, r.DataCoding)
	}
	for _, tc := range parseTextCases {
		f.Add([]byte(tc.text), "", 0, []byte(nil), uint8(0))
	}
	f.Fuzz(func(t *testing.T, text []byte, receiptedID string, state int, netErr []byte, coding uint8) {
		rec := Record{Link: "cz1", Text: text, ReceiptedID: receiptedID, MessageState: state, NetworkError: netErr, DataCoding: coding}
		r, err := Parse(rec)
		// The TLVs win: an id TLV makes any record a receipt, with that id,
		// and a defined message_state sets the state whatever the text says.
		if id := strings.TrimFunc(receiptedID, isSpaceOrNUL); id != "" && (err != nil || r.ID != id) {
			t.Fatalf("Parse(%+v) = %+v, %v; want a receipt with the id TLV %q", rec, r, err, id)
		}
		if st, _, ok := tlvState(state); ok && err == nil && r.State != st {
			t.Fatalf("Parse(%+v) state %q, want %q from message_state %d", rec, r.State, st, state)
		}
		if err != nil {
			if !errors.Is(err, ErrNotReceipt) {
				t.Fatalf("Parse(%+v) error %v does not wrap ErrNotReceipt", rec, err)
			}
			return
		}
		if r.ID == "" || !validState(r.State) {
			t.Fatalf("Parse(%+v) = %+v: want an id and a known state", rec, r)
		}
	})
}
