// Package envelope is the message envelope of DESIGN.md: the JSON producers
// publish on sms.outbound and every stage passes on.
//
// Decode is strict about the known fields (a wrong type is an error naming the
// field) and keeps unknown fields: Encode writes them back unchanged.
package envelope

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Kinds of message.
const (
	Transactional = "transactional" // exempt from marketing caps
	Marketing     = "marketing"     // the default
)

// Limits on the envelope. A text longer than MaxTextBytes cannot be sent as
// up to 255 concatenated parts anyway; the character limit is policy config.
const (
	MaxIDLen        = 64
	MaxExternalID   = 128
	MaxFromLen      = 16
	MaxTextBytes    = 16 * 1024
	MaxCampaignLen  = 64
	MaxCallbackURL  = 2048
	MaxEncodedBytes = 1 << 20

	// MaxSendAhead is how far ahead send_at may be. A held message's
	// accepted and scheduled events must still be in SMS_STATUS (max_age 7
	// days) when it is released: its status, its campaign count and the
	// "already handled" check all read them.
	MaxSendAhead = 6 * 24 * time.Hour
)

// Message is one SMS request. The fields under "set by the pipeline" are
// written by smsflow's stages; producers may leave them out.
type Message struct {
	ID          string        `json:"id,omitempty"`
	ExternalID  string        `json:"external_id,omitempty"`
	To          string        `json:"to"`
	From        string        `json:"from,omitempty"`
	Text        string        `json:"text"`
	Kind        string        `json:"kind,omitempty"`
	Campaign    string        `json:"campaign,omitempty"`
	Route       string        `json:"route,omitempty"`
	TTL         time.Duration `json:"-"` // "ttl": a Go duration string such as "5m"
	SendAt      time.Time     `json:"-"` // "send_at": RFC 3339
	CallbackURL string        `json:"callback_url,omitempty"`

	// Set by the pipeline.
	Pool       string    `json:"pool,omitempty"`
	AcceptedAt time.Time `json:"-"` // "accepted_at": when it entered SMS_OUTBOUND
	ExpiresAt  time.Time `json:"-"` // "expires_at": AcceptedAt + TTL, zero for none

	// Extra holds every field this version does not know, kept verbatim.
	Extra map[string]json.RawMessage `json:"-"`
}

// FieldError is a problem with one field of an envelope.
type FieldError struct {
	Field string `json:"field"`
	Msg   string `json:"error"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// ErrNotJSON marks a body that is not a JSON object at all.
var ErrNotJSON = errors.New("envelope: not a JSON object")

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidID reports whether id can be a message id: it becomes a NATS subject
// token (sms.status.<id>), so only letters, digits, '-' and '_'.
func ValidID(id string) bool { return len(id) <= MaxIDLen && idPattern.MatchString(id) }

// Decode parses one envelope. A type error or malformed value is a
// *FieldError (errors.As); a body that is not a JSON object wraps ErrNotJSON.
// Decode does not check required fields: that is Validate.
func Decode(data []byte) (Message, error) {
	var m Message
	if len(data) > MaxEncodedBytes {
		return m, &FieldError{Field: "", Msg: fmt.Sprintf("envelope is %d bytes, more than %d", len(data), MaxEncodedBytes)}
	}
	if !utf8.Valid(data) {
		return m, fmt.Errorf("%w: invalid UTF-8", ErrNotJSON)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		if err == nil {
			err = errors.New("null")
		}
		return m, fmt.Errorf("%w: %v", ErrNotJSON, err)
	}
	if dec.More() {
		return m, fmt.Errorf("%w: trailing data after the object", ErrNotJSON)
	}
	for k, v := range raw {
		if isNull(v) {
			continue
		}
		if p := m.stringField(k); p != nil {
			if err := unmarshalString(v, p); err != nil {
				return m, &FieldError{Field: k, Msg: "must be a string"}
			}
			continue
		}
		if p := m.timeField(k); p != nil {
			var s string
			if err := unmarshalString(v, &s); err != nil {
				return m, &FieldError{Field: k, Msg: "must be an RFC 3339 time string"}
			}
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return m, &FieldError{Field: k, Msg: fmt.Sprintf("must be an RFC 3339 time such as 2026-11-27T14:00:00+01:00, got %q", s)}
			}
			*p = t
			continue
		}
		if k == "ttl" {
			d, err := decodeTTL(v)
			if err != nil {
				return m, &FieldError{Field: k, Msg: err.Error()}
			}
			m.TTL = d
			continue
		}
		if m.Extra == nil {
			m.Extra = make(map[string]json.RawMessage)
		}
		m.Extra[k] = v
	}
	return m, nil
}

// PeekID returns the id of an envelope that may not decode (a wrong type in
// another field, say), when it has a valid one; "" otherwise. It lets a
// rejection be reported under the id the sender chose.
func PeekID(data []byte) string {
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	var id string
	if json.Unmarshal(v.ID, &id) != nil || !ValidID(id) {
		return ""
	}
	return id
}

// stringField is the field of m that the string member k fills, nil for
// none.
func (m *Message) stringField(k string) *string {
	switch k {
	case "id":
		return &m.ID
	case "external_id":
		return &m.ExternalID
	case "to":
		return &m.To
	case "from":
		return &m.From
	case "text":
		return &m.Text
	case "kind":
		return &m.Kind
	case "campaign":
		return &m.Campaign
	case "route":
		return &m.Route
	case "callback_url":
		return &m.CallbackURL
	case "pool":
		return &m.Pool
	}
	return nil
}

// timeField is the field of m that the time member k fills, nil for none.
func (m *Message) timeField(k string) *time.Time {
	switch k {
	case "send_at":
		return &m.SendAt
	case "accepted_at":
		return &m.AcceptedAt
	case "expires_at":
		return &m.ExpiresAt
	}
	return nil
}

// unmarshalString is json.Unmarshal(v, p) for a string member, without
// reflection for the common case: a string with nothing escaped, whose
// bytes are then its value (v is valid JSON and valid UTF-8: Decode checked).
func unmarshalString(v json.RawMessage, p *string) error {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		plain := true
		for _, c := range v[1 : len(v)-1] {
			if c == '\\' || c == '"' || c < 0x20 {
				plain = false
				break
			}
		}
		if plain {
			*p = string(v[1 : len(v)-1])
			return nil
		}
	}
	return json.Unmarshal(v, p)
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// decodeTTL accepts a Go duration string ("5m", "1h30m") or a number of seconds.
func decodeTTL(v json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("must be a duration such as \"5m\", got %q", s)
		}
		if d <= 0 {
			return 0, fmt.Errorf("must be positive, got %q", s)
		}
		return d, nil
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return 0, errors.New(`must be a duration string such as "5m" or a number of seconds`)
	}
	if f <= 0 || f > math.MaxInt64/float64(time.Second) {
		return 0, fmt.Errorf("must be a positive number of seconds, got %v", f)
	}
	d := time.Duration(f * float64(time.Second))
	if d <= 0 {
		return 0, fmt.Errorf("must be a positive number of seconds, got %v", f)
	}
	return d, nil
}

// Encode writes m as JSON, with its Extra fields.
func Encode(m Message) ([]byte, error) {
	out := make(map[string]any, 16+len(m.Extra))
	for k, v := range m.Extra {
		out[k] = v
	}
	put := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	put("id", m.ID)
	put("external_id", m.ExternalID)
	out["to"] = m.To
	put("from", m.From)
	out["text"] = m.Text
	put("kind", m.Kind)
	put("campaign", m.Campaign)
	put("route", m.Route)
	put("callback_url", m.CallbackURL)
	put("pool", m.Pool)
	if m.TTL > 0 {
		out["ttl"] = m.TTL.String()
	}
	for k, t := range map[string]time.Time{"send_at": m.SendAt, "accepted_at": m.AcceptedAt, "expires_at": m.ExpiresAt} {
		if !t.IsZero() {
			out[k] = t.Format(time.RFC3339Nano)
		}
	}
	return json.Marshal(out)
}

// Validate checks what a message needs before it can be queued, except the
// recipient's number format, which needs policy config (phone.Normalize).
// A send_at in the future is valid up to MaxSendAhead after now: the policy
// stage holds the message until then.
// It returns every problem, one FieldError each.
func (m Message) Validate(now time.Time) []FieldError {
	var errs []FieldError
	add := func(f, msg string) { errs = append(errs, FieldError{Field: f, Msg: msg}) }
	if m.ID != "" && !ValidID(m.ID) {
		add("id", fmt.Sprintf("must be 1-%d letters, digits, '-' or '_'", MaxIDLen))
	}
	if len(m.ExternalID) > MaxExternalID {
		add("external_id", fmt.Sprintf("longer than %d bytes", MaxExternalID))
	} else if m.ExternalID != "" && (strings.TrimSpace(m.ExternalID) != m.ExternalID || strings.ContainsFunc(m.ExternalID, unicode.IsControl)) {
		// It becomes the Nats-Msg-Id header, where nats.go trims spaces and
		// rewrites line breaks: two different keys could collide.
		add("external_id", "must not start or end with white space or contain control characters")
	}
	if strings.TrimSpace(m.To) == "" {
		add("to", "required")
	}
	if strings.TrimSpace(m.Text) == "" {
		add("text", "required and not blank")
	} else if len(m.Text) > MaxTextBytes {
		add("text", fmt.Sprintf("longer than %d bytes", MaxTextBytes))
	}
	if len(m.From) > MaxFromLen {
		add("from", fmt.Sprintf("longer than %d characters", MaxFromLen))
	}
	switch m.Kind {
	case "", Transactional, Marketing:
	default:
		add("kind", fmt.Sprintf("must be %q or %q, got %q", Transactional, Marketing, m.Kind))
	}
	if len(m.Campaign) > MaxCampaignLen {
		add("campaign", fmt.Sprintf("longer than %d bytes", MaxCampaignLen))
	}
	if m.Route != "" && !ValidID(m.Route) {
		add("route", "must be a pool name: letters, digits, '-' or '_'")
	}
	if !m.SendAt.IsZero() && m.SendAt.After(now.Add(MaxSendAhead)) {
		add("send_at", fmt.Sprintf("more than %d days ahead (%s); at most %s", int(MaxSendAhead/(24*time.Hour)), m.SendAt.Format(time.RFC3339), now.Add(MaxSendAhead).UTC().Format(time.RFC3339)))
	}
	if m.CallbackURL != "" {
		u, err := url.Parse(m.CallbackURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(m.CallbackURL) > MaxCallbackURL {
			add("callback_url", "must be an absolute http or https URL")
		}
	}
	return errs
}

// KindOrDefault is m.Kind, or Marketing when it is empty.
func (m Message) KindOrDefault() string {
	if m.Kind == "" {
		return Marketing
	}
	return m.Kind
}

// MsgID is the Nats-Msg-Id a producer should publish m with: external_id when
// set, else id. The HTTP API uses it, so a retried request is not a double.
func (m Message) MsgID() string {
	if m.ExternalID != "" {
		return m.ExternalID
	}
	return m.ID
}

// NewID returns a fresh ULID.
func NewID(now time.Time) string {
	return ulid.MustNew(ulid.Timestamp(now), rand.Reader).String()
}

// IDFor returns a ULID derived only from (key, t), for a message that arrived
// without an id: every redelivery of the same stream message gets the same id.
func IDFor(key string, t time.Time) string {
	h := fnv.New128a()
	h.Write([]byte(key))
	var ent [16]byte
	copy(ent[:], h.Sum(nil))
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(t))
	_ = id.SetEntropy(ent[:10])
	return id.String()
}

// SeqKey is the IDFor key of a stream message: stream name and sequence.
func SeqKey(stream string, seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return stream + string(b[:])
}

// EventCampaign is the campaign to put in m's status events: none when it is
// too long to be valid, since it is the sender's input and an event must fit
// a NATS message.
func (m Message) EventCampaign() string {
	if len(m.Campaign) > MaxCampaignLen {
		return ""
	}
	return m.Campaign
}
