package status

import (
	"encoding/json"
	"fmt"

	segjson "github.com/segmentio/encoding/json"
)

// Status events are the pipeline's most decoded data: every event is read by
// the status indexer, the webhooks stage and the dashboard, and written once
// or twice (the CAS path reads the previous one). Profiled at 2,000 messages a
// second, encoding/json's decoding of them was a tenth of the process's CPU
// (2.1 µs and 12 allocations an event, most of it reflection and time.Time's
// UnmarshalJSON on a fresh goroutine stack), so events go through
// github.com/segmentio/encoding/json (0.5 µs), written to behave as
// encoding/json does, errors included (a number that overflows its field is
// an error, not a wrapped value, as it is with some faster decoders).
//
// Where they still differ, encoding/json decides: an event with a byte
// outside ASCII (never in the events the pipeline writes; a sender's text
// quoted in a detail, rarely) goes to encoding/json, which folds keys with
// Unicode rules ("ſtatus" is "status") and replaces invalid UTF-8 with
// U+FFFD. FuzzDecodeEvent holds the two to the same verdicts and events.

// DecodeEvent decodes one status event. It does not check the event: callers
// say what they need (an ID, a known status, the subject it came on).
func DecodeEvent(data []byte) (Event, error) {
	decode := segjson.Unmarshal
	if !ascii(data) {
		decode = json.Unmarshal
	}
	var ev Event
	if err := decode(data, &ev); err != nil {
		return Event{}, fmt.Errorf("status: decode event: %w", err)
	}
	return ev, nil
}

// ascii reports whether every byte of b is below 0x80.
func ascii(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// EncodeEvent is ev as JSON, as it is stored on sms.status.<id>.
func EncodeEvent(ev Event) ([]byte, error) {
	data, err := segjson.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("status: encode event: %w", err)
	}
	return data, nil
}
