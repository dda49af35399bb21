package status

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzDecodeEvent holds DecodeEvent to encoding/json: the same verdict on any
// input, the same event when both accept it, and what EncodeEvent writes
// reads back the same with encoding/json.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{
		`{"id":"m1","status":"submitted","at":"2026-11-23T18:40:05.123456789Z","stage":"egress","pool":"default","link":"l1","smsc_id":"0012","parts":1,"attempt":2}`,
		`{"id":"m2","status":"accepted","at":"2026-11-23T18:40:05Z","campaign":"c","callback_url":"http://127.0.0.1/x"}`,
		`{"id":"m3","status":"failed","reason":"smsc_rejected","detail":"caf\u00e9 \"q\"","code":11,"at":"2026-11-23T18:40:05+02:00"}`,
		`{"ID":"m4","STATUS":"queued"}`,
		`{"id":"m5","status":"x","at":"yesterday"}`,
		`{"id":5}`, `{"parts":"1"}`, `{"parts":1.5}`, `{"id":"a"} x`, `[]`, `null`, ``, `{"id":"\xff"}`,
		`{"id":"a","id":"b"}`, `{"at":null}`, `{"code":-1e3}`,
		`{"id":"m","status":"submitted","attempt":9223372036854775808}`, `{"parts":9999999999999999999}`,
		`{"code":-9223372036854775809}`, `{"ſtatus":"delivered","linK":"l1"}`, `{"detail":"cafÃ©"}`,
		`{"id":"m","status":"queued"} `, ` {"id":"m"}`, `{"at":"2026-11-23T18:40:05.1234567891Z"}`, `{"at":"2026-02-30T00:00:00Z"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want Event
		wantErr := json.Unmarshal(data, &want)
		got, err := DecodeEvent(data)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("DecodeEvent(%q): err %v, encoding/json: %v", data, err, wantErr)
		}
		if err != nil {
			return
		}
		if !sameEvent(got, want) {
			t.Fatalf("DecodeEvent(%q) = %+v, encoding/json: %+v", data, got, want)
		}
		enc, err := EncodeEvent(got)
		if err != nil {
			t.Fatalf("EncodeEvent(%+v): %v", got, err)
		}
		var back Event
		if err := json.Unmarshal(enc, &back); err != nil || !sameEvent(back, got) {
			t.Fatalf("EncodeEvent(%+v) = %s, reads back as %+v (%v)", got, enc, back, err)
		}
	})
}

// sameEvent compares events with At as an instant (its location may differ).
func sameEvent(a, b Event) bool {
	at, bt := a.At, b.At
	a.At, b.At = time.Time{}, time.Time{}
	return a == b && at.Equal(bt)
}
