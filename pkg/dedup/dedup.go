// Package dedup is the duplicate window (CP2): the same text to the same
// number within a window is a duplicate, whatever its id. It is not
// Nats-Msg-Id idempotency, which drops a replay of one request: two requests
// with the same content are two messages, and the second is rejected.
//
// A (number, text) pair is claimed by creating a KV key (bucket sms_dedup)
// whose TTL is the window: the create succeeds for one message only, on
// every instance. The key holds the claiming id, so that message, redelivered
// after a crash, still passes.
package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/jspub"
)

// Window claims (number, text) pairs for a while.
type Window struct {
	kv     jetstream.KeyValue
	window time.Duration
	nc     *nats.Conn // set by WriteVia
}

// New makes the window; d <= 0 turns it off (nothing is a duplicate). The
// bucket must allow per-key TTLs (limit_marker_ttl set).
func New(kv jetstream.KeyValue, d time.Duration) *Window {
	return &Window{kv: kv, window: d}
}

// WriteVia makes Claim try its create first as one write straight to the
// bucket's subject on nc (package jspub), which costs less CPU than the
// KeyValue's Create; anything but success takes the KeyValue path, which
// tells a held pair from an expired claim's marker. nc must be the
// connection of the bucket's JetStream (no domain, no mirror).
func (w *Window) WriteVia(nc *nats.Conn) *Window {
	w.nc = nc
	return w
}

// Key is the KV key of (number, text): the E.164 digits, a dot, and the first
// 128 bits of the text's SHA-256 in hex.
func Key(number, text string) string {
	sum := sha256.Sum256([]byte(text))
	return strings.TrimPrefix(number, "+") + "." + hex.EncodeToString(sum[:16])
}

// Claim records that id sends text to number, and reports the id that had
// already claimed the pair within the window ("" when id is the first, or
// the claim is its own: a redelivery). An error means nothing is known.
func (w *Window) Claim(ctx context.Context, number, text, id string) (string, error) {
	if w.window <= 0 {
		return "", nil
	}
	key := Key(number, text)
	if w.nc != nil {
		// The usual case, a pair nobody holds: one write. A refusal (the
		// pair is held, or an expired claim left its marker) or no answer
		// takes the careful path, where a create by this very write shows
		// up as held by id.
		msg := &nats.Msg{Subject: jspub.KVSubject(w.kv.Bucket(), key), Data: []byte(id)}
		if _, err := jspub.Publish(ctx, w.nc, msg, jspub.Options{Expect: true, TTL: w.window}); err == nil {
			return "", nil
		}
	}
	for range 4 {
		_, err := w.kv.Create(ctx, key, []byte(id), jetstream.KeyTTL(w.window))
		if err == nil {
			return "", nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("dedup: claim %s: %w", key, err)
		}
		owner, found, err := w.owner(ctx, key)
		if err != nil {
			return "", err
		}
		if !found {
			continue // expired between the create and the read: try again
		}
		if owner == id {
			return "", nil
		}
		return owner, nil
	}
	return "", fmt.Errorf("dedup: claim %s: the key kept changing", key)
}

// Holder reports the id that holds (number, text) in the window, "" when
// none: a read that claims nothing, for checks before queueing.
func (w *Window) Holder(ctx context.Context, number, text string) (string, error) {
	if w.window <= 0 {
		return "", nil
	}
	owner, _, err := w.owner(ctx, Key(number, text))
	return owner, err
}

func (w *Window) owner(ctx context.Context, key string) (string, bool, error) {
	e, err := w.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("dedup: read %s: %w", key, err)
	}
	return string(e.Value()), true, nil
}
