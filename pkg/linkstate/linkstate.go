// Package linkstate is what KV sms_links holds about each SMPP link: its
// health as the egress stage last reported it, and the operator's control
// (paused or not). Egress writes health and obeys control; the HTTP API and
// the nats CLI read health and write control:
//
//	nats kv ls sms_links                       (health.<link>.<instance>, control.<link>)
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

// Health is a link's state as one egress instance sees it. Each instance
// reports under its own key; View adds them up per link.
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
	Binds          int       `json:"binds"`        // SMPP binds up now (a tx_rx session is two)
	BindsWanted    int       `json:"binds_wanted"` // binds the link keeps: sessions, x2 for tx_rx
	UpdatedAt      time.Time `json:"updated_at"`
}

// Control is what an operator asks of a link.
type Control struct {
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// HealthKey is the key of one instance's report on a link; ControlKey the
// link's control, shared by all instances.
func HealthKey(link, instance string) string { return "health." + link + "." + token(instance) }
func ControlKey(link string) string          { return "control." + link }

// token makes s a single KV key token: [A-Za-z0-9_-], others become '_'.
func token(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// Stale is how old a report may be before View ignores it: an instance
// reports at least every 30 s, so one silent for longer is gone (crashed;
// a clean stop deletes its report).
const Stale = 90 * time.Second

// PutHealth records h.
func PutHealth(ctx context.Context, kv jetstream.KeyValue, h Health) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, HealthKey(h.Link, h.Instance), b)
	return err
}

// DeleteHealth removes an instance's report, when it stops sending on the link.
func DeleteHealth(ctx context.Context, kv jetstream.KeyValue, link, instance string) error {
	return kv.Delete(ctx, HealthKey(link, instance))
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

// View is a link's state for the API: the fresh reports of the instances
// sending on it, added up (bound if any is, the lowest effective rate, the
// sum of throttles, the newest error), and its control.
type View struct {
	Health
	Instances []Health `json:"instances"`
	Control   *Control `json:"control,omitempty"`
}

// List returns every link that has a fresh report or a control entry,
// sorted by name. now decides which reports are stale.
func List(ctx context.Context, kv jetstream.KeyValue, now time.Time) ([]View, error) {
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
		kind, rest, ok := strings.Cut(key, ".")
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
			if json.Unmarshal(e.Value(), &h) == nil && h.Link != "" && now.Sub(h.UpdatedAt) <= Stale {
				v := get(h.Link)
				v.Instances = append(v.Instances, h)
			}
		case "control":
			if c, err := ParseControl(e.Value()); err == nil {
				get(rest).Control = &c
			}
		}
	}
	out := make([]View, 0, len(views))
	for _, v := range views {
		v.sum()
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Link < out[j].Link })
	return out, nil
}

// sum adds up the instances' reports into v.Health.
func (v *View) sum() {
	sort.Slice(v.Instances, func(i, j int) bool { return v.Instances[i].Instance < v.Instances[j].Instance })
	var errAt time.Time
	for _, h := range v.Instances {
		v.Pool = h.Pool
		v.Bound = v.Bound || h.Bound
		v.Paused = v.Paused || h.Paused
		v.ConfiguredRate = max(v.ConfiguredRate, h.ConfiguredRate)
		if h.Bound && (v.EffectiveRate == 0 || h.EffectiveRate < v.EffectiveRate) {
			v.EffectiveRate = h.EffectiveRate
		}
		v.Throttles += h.Throttles
		if h.LastError != "" && h.UpdatedAt.After(errAt) {
			v.LastError, errAt = h.LastError, h.UpdatedAt
		}
		if h.UpdatedAt.After(v.UpdatedAt) {
			v.UpdatedAt = h.UpdatedAt
		}
	}
	v.Instance = ""
	if v.Control != nil {
		v.Paused = v.Control.Paused
	}
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
