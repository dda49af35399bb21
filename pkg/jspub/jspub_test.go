package jspub

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/natstest"
)

// What the server answers, against a real one: a stored message, a replay
// of its Nats-Msg-Id, a lost compare-and-set, a per-message TTL, a KV write
// the library reads back, and a subject no stream takes.
func TestPublishAgainstAServer(t *testing.T) {
	srv := natstest.RunServer(t, t.TempDir())
	nc, js := natstest.Connect(t, srv)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, AllowMsgTTL: true}); err != nil {
		t.Fatal(err)
	}
	a, err := Publish(ctx, nc, &nats.Msg{Subject: "s.1", Data: []byte("one")}, Options{MsgID: "m1", Expect: true})
	if err != nil || a != (Ack{Sequence: 1}) {
		t.Fatalf("first write: %+v, %v; want sequence 1", a, err)
	}
	a, err = Publish(ctx, nc, &nats.Msg{Subject: "s.1", Data: []byte("one")}, Options{MsgID: "m1"})
	if err != nil || a != (Ack{Sequence: 1, Duplicate: true}) {
		t.Fatalf("replay: %+v, %v; want sequence 1, duplicate", a, err)
	}
	_, err = Publish(ctx, nc, &nats.Msg{Subject: "s.1", Data: []byte("two")}, Options{Expect: true, ExpectLast: 0})
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence || !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("lost compare-and-set: %v; want the API error 10071, matching jetstream.ErrKeyExists", err)
	}
	a, err = Publish(ctx, nc, &nats.Msg{Subject: "s.1", Data: []byte("two")}, Options{Expect: true, ExpectLast: 1, TTL: time.Hour})
	if err != nil || a.Sequence != 2 {
		t.Fatalf("won compare-and-set: %+v, %v; want sequence 2", a, err)
	}
	raw, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	m, err := raw.GetMsg(ctx, 2)
	if err != nil || m.Header.Get(jetstream.MsgTTLHeader) != "1h0m0s" {
		t.Fatalf("message 2: %v, %v; want a Nats-TTL of 1h0m0s", m, err)
	}

	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	a, err = Publish(ctx, nc, &nats.Msg{Subject: KVSubject("b", "k.1"), Data: []byte("v")}, Options{Expect: true})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "k.1"); err != nil || string(e.Value()) != "v" || e.Revision() != a.Sequence {
		t.Fatalf("kv.Get after a write to its subject: %v, %v; want v at revision %d", e, err, a.Sequence)
	}

	if _, err := Publish(ctx, nc, &nats.Msg{Subject: "nobody.here"}, Options{}); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("write to a subject no stream takes: %v; want jetstream.ErrNoStreamResponse", err)
	}
}

// The hand-read acks must read as encoding/json reads them, and whatever
// quickAck does not take must still come out right.
func FuzzParseAck(f *testing.F) {
	for _, s := range []string{`{"stream":"S","seq":1}`, `{"stream":"S","seq":12,"duplicate": true}`, `{"stream":"S","domain":"hub","seq":3}`,
		`{"stream":"S","seq":4,"batch":"b","count":2}`, `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"},"stream":"S","seq":0}`,
		`{"stream":"S\"x","seq":1}`, `{"stream":"S","seq":18446744073709551616}`, `{"stream":"S","seq":1,"seq":2}`, `{"stream":"S","seq":1,"duplicate": true,"duplicate":false}`, `{"stream":"","seq":1}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, ok := quickAck(data)
		if !ok {
			_, _ = ParseAck(data) // must not panic
			return
		}
		var r struct {
			Error     *jetstream.APIError `json:"error"`
			Stream    *string             `json:"stream"`
			Sequence  uint64              `json:"seq"`
			Duplicate bool                `json:"duplicate"`
		}
		if err := json.Unmarshal(data, &r); err != nil || r.Error != nil || r.Stream == nil || *r.Stream == "" ||
			r.Sequence != a.Sequence || r.Duplicate != a.Duplicate {
			t.Fatalf("quickAck(%s) = %+v; encoding/json reads %+v, %v", data, a, r, err)
		}
	})
}
