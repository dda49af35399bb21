// Package jspub publishes to JetStream and reads the server's ack without
// reflection: the hot path of a stage that makes several writes a message.
//
// It is jetstream.PublishMsg's request and reply, nothing more: the same
// headers (Nats-Msg-Id, Nats-Expected-Last-Subject-Sequence, Nats-TTL), the
// same *jetstream.APIError for a refused write, so errors.Is and errors.As
// work as with the library (jetstream.ErrKeyExists matches a wrong last
// sequence). It makes no retries: an error means nothing is known and the
// caller retries, as it would after jetstream.PublishMsg. What it saves is
// the library's per-call options and the reflection-based decode of the
// ack: about a sixth of the policy stage's CPU a message (BenchmarkStage).
// KV writes go to the bucket's stream subject, "$KV.<bucket>.<key>": a
// bucket here is a plain stream (no mirror, no JetStream domain).
package jspub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Ack is the server's answer to a stored (or deduplicated) message.
type Ack struct {
	Sequence  uint64 // the stream sequence of the message
	Duplicate bool   // the message was a replay within the duplicate window: not stored again
}

// Options are the headers of one write; the zero value sets none.
type Options struct {
	MsgID string // Nats-Msg-Id
	// ExpectLast, when Expect is set, is the sequence the subject's last
	// message must have (0: the subject has none): a compare-and-set.
	ExpectLast uint64
	Expect     bool
	TTL        time.Duration // Nats-TTL of the message (the stream must allow it)
}

// DefaultTimeout bounds the wait for an ack, as the jetstream package's
// default does; a sooner deadline of ctx bounds it too. ctx being cancelled
// is looked at before the write, not during the wait.
const DefaultTimeout = 5 * time.Second

// Publish writes msg (its Header is set here) and waits for the ack.
func Publish(ctx context.Context, nc *nats.Conn, msg *nats.Msg, o Options) (Ack, error) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	if o.MsgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, o.MsgID)
	}
	if o.Expect {
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(o.ExpectLast, 10))
	}
	if o.TTL > 0 {
		msg.Header.Set(jetstream.MsgTTLHeader, o.TTL.String())
	}
	if err := ctx.Err(); err != nil {
		return Ack{}, err
	}
	// A pooled timer rather than a context with a deadline a call, which
	// costs as much as the rest of the request.
	timeout := DefaultTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	resp, err := nc.RequestMsg(msg, timeout)
	if errors.Is(err, nats.ErrNoResponders) {
		return Ack{}, fmt.Errorf("%w: %s", jetstream.ErrNoStreamResponse, msg.Subject)
	}
	if err != nil {
		return Ack{}, err
	}
	return ParseAck(resp.Data)
}

// KVSubject is the subject a write to key of bucket goes to.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// ParseAck reads the server's answer to a publish: an Ack, or the
// *jetstream.APIError it reports. The usual answer, {"stream":…,"seq":N} with
// perhaps "duplicate":true and "domain", is read by hand; anything else
// (an error, a field it does not know) by encoding/json.
func ParseAck(data []byte) (Ack, error) {
	if a, ok := quickAck(data); ok {
		return a, nil
	}
	var r struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Sequence  uint64              `json:"seq"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return Ack{}, fmt.Errorf("jspub: bad ack %q: %w", data, err)
	}
	if r.Error != nil {
		return Ack{}, r.Error
	}
	if r.Stream == "" {
		return Ack{}, fmt.Errorf("jspub: ack %q names no stream", data)
	}
	return Ack{Sequence: r.Sequence, Duplicate: r.Duplicate}, nil
}

// quickAck reads {"stream":"S","seq":N} with, in any order after stream,
// "duplicate":true|false and "domain":"D", written without spaces except
// nats-server's `"duplicate": true`; ok is false for anything else, which
// ParseAck then hands to encoding/json.
func quickAck(d []byte) (a Ack, ok bool) {
	d, ok = cut(d, `{"stream":"`)
	if !ok {
		return a, false
	}
	i := bytes.IndexByte(d, '"')
	if i <= 0 || bytes.IndexByte(d[:i], '\\') >= 0 {
		return a, false
	}
	d = d[i+1:]
	seen := false
	for {
		switch {
		case len(d) == 1 && d[0] == '}':
			return a, seen
		case hasPrefix(d, `,"seq":`):
			d = d[len(`,"seq":`):]
			n := 0
			for n < len(d) && d[n] >= '0' && d[n] <= '9' {
				n++
			}
			seq, err := strconv.ParseUint(string(d[:n]), 10, 64)
			if err != nil || seen {
				return a, false
			}
			a.Sequence, seen, d = seq, true, d[n:]
		case hasPrefix(d, `,"duplicate": true`): // as nats-server writes it
			a.Duplicate, d = true, d[len(`,"duplicate": true`):]
		case hasPrefix(d, `,"duplicate":true`):
			a.Duplicate, d = true, d[len(`,"duplicate":true`):]
		case hasPrefix(d, `,"duplicate":false`): // the last of repeated members wins, as in encoding/json
			a.Duplicate, d = false, d[len(`,"duplicate":false`):]
		case hasPrefix(d, `,"domain":"`):
			d = d[len(`,"domain":"`):]
			i := bytes.IndexByte(d, '"')
			if i < 0 || bytes.IndexByte(d[:i], '\\') >= 0 {
				return a, false
			}
			d = d[i+1:]
		default:
			return a, false
		}
	}
}

func hasPrefix(d []byte, p string) bool { return len(d) >= len(p) && string(d[:len(p)]) == p }

func cut(d []byte, p string) ([]byte, bool) {
	if !hasPrefix(d, p) {
		return d, false
	}
	return d[len(p):], true
}
