package optout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/phone"
)

// Record is the value of a number's key in sms_optout.
type Record struct {
	OptedOut bool      `json:"opted_out"`
	Seq      uint64    `json:"seq"` // SMS_INBOUND sequence of the reply that set it: a later one wins
	At       time.Time `json:"at"`  // when the reply was received
	Link     string    `json:"link,omitempty"`
}

// Key is the KV key of a number: its E.164 digits without "+".
func Key(number string) string { return strings.TrimPrefix(number, "+") }

// Store reads and writes sms_optout.
type Store struct{ kv jetstream.KeyValue }

// NewStore uses kv (bucket sms_optout).
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Set records r for number unless the key already holds a later reply (a
// higher Seq): replies handled out of order, on several instances, still
// leave the last one said in force. Setting the same reply again is a no-op.
func (s *Store) Set(ctx context.Context, number string, r Record) error {
	key := Key(number)
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	for range 16 {
		e, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = s.kv.Create(ctx, key, data)
		case err != nil:
			return fmt.Errorf("optout: read %s: %w", key, err)
		default:
			var cur Record
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Seq >= r.Seq {
				return nil
			}
			_, err = s.kv.Update(ctx, key, data, e.Revision())
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("optout: write %s: %w", key, err)
		}
	}
	return fmt.Errorf("optout: write %s: lost the compare-and-set 16 times", key)
}

// OptedOut reads number's state from the bucket.
func (s *Store) OptedOut(ctx context.Context, number string) (bool, error) {
	e, err := s.kv.Get(ctx, Key(number))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("optout: read %s: %w", Key(number), err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return false, fmt.Errorf("optout: decode %s: %w", Key(number), err)
	}
	return r.OptedOut, nil
}

// ErrNotReady is returned by View.OptedOut before the view has loaded the
// bucket: a message must then wait (be retried), not pass unchecked.
var ErrNotReady = errors.New("optout: view not loaded yet")

// View mirrors sms_optout in memory through a KV watch: reads cost no round
// trip. It lags the bucket by the watch's delivery, milliseconds: a message
// checked in the same instant a STOP is stored may still pass.
type View struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	mu     sync.RWMutex
	out    map[string]bool // key -> opted out
	ready  chan struct{}
	loaded sync.Once
}

// NewView makes a view of kv; Run fills it.
func NewView(kv jetstream.KeyValue, log *slog.Logger) *View {
	return &View{kv: kv, log: log, out: map[string]bool{}, ready: make(chan struct{})}
}

// Run watches the bucket until ctx is done, and returns nil then. The view
// is ready once the bucket's current values are loaded. A watch that ends
// (the connection closed) is started again until ctx is done.
func (v *View) Run(ctx context.Context) error {
	for {
		err := v.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		t := time.NewTimer(time.Second) // the connection may be reconnecting
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		v.log.Warn("opt-out watch ended; watching again", "err", err)
	}
}

func (v *View) watch(ctx context.Context) error {
	w, err := v.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("optout: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("optout: watch ended")
			}
			if e == nil { // the current values are all in
				v.loaded.Do(func() { close(v.ready) })
				continue
			}
			v.apply(e)
		}
	}
}

func (v *View) apply(e jetstream.KeyValueEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(v.out, e.Key())
		return
	}
	var r Record
	if json.Unmarshal(e.Value(), &r) == nil && r.OptedOut {
		v.out[e.Key()] = true
	} else {
		delete(v.out, e.Key())
	}
}

// Ready is closed once the view holds the bucket's values.
func (v *View) Ready() <-chan struct{} { return v.ready }

// OptedOut reports whether number has opted out, as far as the view knows.
func (v *View) OptedOut(_ context.Context, number string) (bool, error) {
	select {
	case <-v.ready:
	default:
		return false, ErrNotReady
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.out[Key(number)], nil
}

// Sender is the E.164 number a mobile-originated message came from (its
// from). SMSCs send source_addr in international form, usually without "+"
// (egress adds it only when the TON says international): digits-only
// sources of 10 digits or more are read as international first, shorter
// ones as national in region first (a 9-digit Czech number is also a
// "possible" Malaysian one).
func Sender(from, region string) (string, error) {
	src := strings.TrimSpace(from)
	if src == "" || strings.HasPrefix(src, "+") || strings.HasPrefix(src, "00") || strings.Trim(src, "0123456789") != "" {
		return phone.Normalize(src, region)
	}
	intl := func() (string, error) { return phone.Normalize("+"+src, "") }
	national := func() (string, error) { return phone.Normalize(src, region) }
	first, second := national, intl
	if len(src) >= 10 || region == "" {
		first, second = intl, national
	}
	if n, err := first(); err == nil {
		return n, nil
	}
	return second()
}
