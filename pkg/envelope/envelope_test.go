package envelope

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDecodeKeepsUnknownFieldsThroughEncode(t *testing.T) {
	in := `{"id":"01J0","to":"+420600000001","text":"hi","ttl":"5m","send_at":"2026-11-27T14:00:00+01:00","x_customer":{"tier":3},"note":"keep me"}`
	m, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.TTL != 5*time.Minute || m.SendAt.IsZero() {
		t.Fatalf("ttl %v send_at %v", m.TTL, m.SendAt)
	}
	out, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got["note"] != "keep me" || got["x_customer"].(map[string]any)["tier"].(float64) != 3 {
		t.Fatalf("unknown fields lost: %s", out)
	}
	again, err := Decode(out)
	if err != nil || again.TTL != m.TTL || !again.SendAt.Equal(m.SendAt) || again.ID != m.ID {
		t.Fatalf("round trip: %+v %v", again, err)
	}
}

func TestDecodeNamesTheFieldWithTheWrongType(t *testing.T) {
	for _, tc := range []struct{ name, body, field string }{
		{"a number as recipient", `{"to":420600000001,"text":"x"}`, "to"},
		{"an object as text", `{"to":"+420600000001","text":{"a":1}}`, "text"},
		{"a ttl that is not a duration", `{"to":"+1","text":"x","ttl":"soon"}`, "ttl"},
		{"a negative ttl", `{"to":"+1","text":"x","ttl":-3}`, "ttl"},
		{"a send_at that is not RFC 3339", `{"to":"+1","text":"x","send_at":"tomorrow"}`, "send_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.body))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError on %q", err, tc.field)
			}
		})
	}
}

func TestDecodeRejectsWhatIsNotAnObject(t *testing.T) {
	for _, body := range []string{``, `[]`, `"x"`, `null`, `{"to":"+1"`, `{"to":"+1"} {}`, "{\"to\":\"\xff\"}"} {
		if _, err := Decode([]byte(body)); !errors.Is(err, ErrNotJSON) {
			t.Errorf("Decode(%q) = %v, want ErrNotJSON", body, err)
		}
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	m := Message{ID: "a.b", ExternalID: " order-1", To: " ", Text: "", Kind: "spam", Route: "x>y", CallbackURL: "ftp://x"}
	errs := m.Validate(time.Now())
	fields := map[string]bool{}
	for _, e := range errs {
		fields[e.Field] = true
	}
	for _, f := range []string{"id", "external_id", "to", "text", "kind", "route", "callback_url"} {
		if !fields[f] {
			t.Errorf("no error for %s in %v", f, errs)
		}
	}
	ok := Message{To: "+420600000001", Text: "hello", Kind: Transactional}
	if errs := ok.Validate(time.Now()); len(errs) != 0 {
		t.Fatalf("valid message: %v", errs)
	}
}

func TestIDForIsStableAndValid(t *testing.T) {
	ts := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	a, b := IDFor(SeqKey("S", 7), ts), IDFor(SeqKey("S", 7), ts)
	c := IDFor(SeqKey("S", 8), ts)
	if a != b || a == c || !ValidID(a) {
		t.Fatalf("IDFor: %s %s %s", a, b, c)
	}
	if id := NewID(ts); !ValidID(id) || len(id) != 26 {
		t.Fatalf("NewID = %q", id)
	}
}

func TestMsgIDPrefersExternalID(t *testing.T) {
	if got := (Message{ID: "a", ExternalID: "order-1"}).MsgID(); got != "order-1" {
		t.Fatalf("MsgID = %q", got)
	}
	if got := (Message{ID: "a"}).MsgID(); got != "a" {
		t.Fatalf("MsgID = %q", got)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"to":"+420600000001","text":"hi","ttl":"5m"}`, `{"x":[1,2,{"y":null}],"ttl":30}`, `{}`, `[]`, `{"send_at":"2026-11-27T14:00:00Z"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		_ = m.Validate(time.Now())
		out, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode after Decode: %v", err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		if again.To != m.To || again.Text != m.Text || again.ID != m.ID || again.TTL != m.TTL || len(again.Extra) != len(m.Extra) {
			t.Fatalf("round trip changed the message: %+v vs %+v", again, m)
		}
	})
}

func TestPrepareNormalisesTheRecipientAndLimitsTheText(t *testing.T) {
	m, errs := Prepare(Message{To: "00420 600 000 001", Text: "hello"}, time.Now(), "", 10)
	if len(errs) != 0 || m.To != "+420600000001" {
		t.Fatalf("Prepare = %q, %v", m.To, errs)
	}
	_, errs = Prepare(Message{To: "+420 6OO 000 001", Text: "hello world, long"}, time.Now(), "", 10)
	if len(errs) != 2 || errs[0].Field != "to" || errs[1].Field != "text" {
		t.Fatalf("want errors on to (letters) and text (too long), got %v", errs)
	}
}

func TestPeekIDFindsTheIdOfAnEnvelopeThatDoesNotDecode(t *testing.T) {
	for body, want := range map[string]string{
		`{"id":"a1","to":42}`:   "a1",
		`{"id":"a.b","to":"x"}`: "",
		`{"id":7}`:              "",
		`not json`:              "",
	} {
		if got := PeekID([]byte(body)); got != want {
			t.Errorf("PeekID(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestPrepareAcceptsASendAtUpToAYearAhead(t *testing.T) {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		sendAt  time.Time
		wantErr bool
	}{
		{"a send_at in the past is sent at once", now.Add(-time.Minute), false},
		{"a send_at five hours ahead is held until then", now.Add(5 * time.Hour), false},
		{"a send_at exactly MaxSendAhead ahead is still held", now.Add(MaxSendAhead), false},
		{"a send_at a second past MaxSendAhead is invalid", now.Add(MaxSendAhead + time.Second), true},
		{"a send_at in the wrong millennium is invalid", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := Prepare(Message{To: "+420600000001", Text: "Black Friday", SendAt: tc.sendAt}, now, "", 0)
			if tc.wantErr && (len(errs) != 1 || errs[0].Field != "send_at") {
				t.Fatalf("errors = %v, want one on send_at", errs)
			}
			if !tc.wantErr && len(errs) != 0 {
				t.Fatalf("errors = %v, want none", errs)
			}
		})
	}
}

// unmarshalString's shortcut must give what json.Unmarshal gives, for every
// JSON value Decode can hand it (valid JSON, valid UTF-8).
func FuzzUnmarshalString(f *testing.F) {
	for _, s := range []string{`"hi"`, `""`, `"a\"b"`, `"tab\there"`, `"\u00e9"`, `"é ✓"`, `"<b>&amp;"`, `12`, `true`, `["x"]`, `"\ud800"`, "\"a\x01b\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		if !json.Valid(v) || !utf8.Valid(v) {
			return
		}
		var got, want string
		gotErr := unmarshalString(v, &got)
		wantErr := json.Unmarshal(v, &want)
		if got != want || (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("unmarshalString(%s) = %q, %v; json.Unmarshal gives %q, %v", v, got, gotErr, want, wantErr)
		}
	})
}

// BenchmarkDecode: a plain envelope, as producers send them.
//
//	go test -run '^$' -bench BenchmarkDecode ./pkg/envelope/
func BenchmarkDecode(b *testing.B) {
	data := []byte(`{"id":"bench-0000001","to":"+420600000001","text":"offer 1","kind":"marketing","campaign":"bf-2026","ttl":"5m","x-trace":"abc"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}
