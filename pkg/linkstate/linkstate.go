// Package linkstate is what KV sms_links holds about each SMPP link: its
// health as the egress stage last reported it, and the operator's control
// (paused or not). Egress writes health and obeys control; the HTTP API and
// the nats CLI read health and write control:
//
//	nats kv get sms_links health.sim1
//	nats kv put sms_links control.sim1 '{"paused":true,"reason":"maintenance"}'
package linkstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Health is a link's state as one egress instance sees it. With several
// instances on one link, the latest report wins; Instance says whose it is.
type Health struct {
	Link           string    `json:"link"`
	Pool           string    `json:"pool"`
	Instance       string    `json:"instance"`
	Bound          bool      `json:"bound"`
	Paused         bool      `json:"paused"`
	ConfiguredRate float64   `json:"configured_rate"`
	EffectiveRate  float64   `json:"effective_rate"` // lowered after throttles
	Throttles      int64     `json:"throttles"`      // ESME_RTHROTTLED answers seen by this instance
	LastError      string    `json:"last_error,omitempty"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// Control is what an operator asks of a link.
type Control struct {
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// HealthKey and ControlKey are the KV keys of a link.
func HealthKey(link string) string  { return "health." + link }
func ControlKey(link string) string { return "control." + link }

// PutHealth records h.
func PutHealth(ctx context.Context, kv jetstream.KeyValue, h Health) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, HealthKey(h.Link), b)
	return err
}

// SetPaused pauses or resumes a link on every instance.
func SetPaused(ctx context.Context, kv jetstream.KeyValue, link string, paused bool, reason string) error {
	b, err := json.Marshal(Control{Paused: paused, Reason: reason, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, ControlKey(link), b); err != nil {
		return fmt.Errorf("linkstate: %s %s: %w", map[bool]string{true: "pause", false: "resume"}[paused], link, err)
	}
	return nil
}

// ParseControl reads a control value. Anything that is not a JSON object is
// an error; an empty or deleted key means not paused.
func ParseControl(b []byte) (Control, error) {
	var c Control
	if len(strings.TrimSpace(string(b))) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return Control{}, fmt.Errorf("linkstate: control value %q: %w", truncate(b), err)
	}
	return c, nil
}

// View is a link's health and control, for the API.
type View struct {
	Health
	Control *Control `json:"control,omitempty"`
}

// List returns every link that has reported health or has a control entry,
// sorted by name.
func List(ctx context.Context, kv jetstream.KeyValue) ([]View, error) {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	views := map[string]*View{}
	get := func(link string) *View {
		if v, ok := views[link]; ok {
			return v
		}
		v := &View{Health: Health{Link: link}}
		views[link] = v
		return v
	}
	for key := range keys.Keys() {
		kind, link, ok := strings.Cut(key, ".")
		if !ok {
			continue
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		switch kind {
		case "health":
			var h Health
			if json.Unmarshal(e.Value(), &h) == nil {
				get(link).Health = h
			}
		case "control":
			if c, err := ParseControl(e.Value()); err == nil {
				get(link).Control = &c
			}
		}
	}
	out := make([]View, 0, len(views))
	for _, v := range views {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Link < out[j].Link })
	return out, nil
}

// WatchControl calls f with the link's control now and on every change, until
// ctx ends. A malformed value is reported to bad and otherwise ignored (the
// link keeps its last state).
func WatchControl(ctx context.Context, kv jetstream.KeyValue, link string, f func(Control), bad func(error)) error {
	w, err := kv.Watch(ctx, ControlKey(link))
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil { // initial values delivered: nothing stored means running
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				f(Control{})
				continue
			}
			c, err := ParseControl(e.Value())
			if err != nil {
				bad(err)
				continue
			}
			f(c)
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
