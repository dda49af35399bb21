package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/status"
)

// A long message is sent as several submits, each with its own SMSC id and
// receipt. Its status is decided over all of them: it is delivered once every
// part is delivered, and undelivered (or expired) as soon as one part is.
// Each part's first final receipt is kept durably in KV sms_receipt_parts
// (one JSON value per message, updated with compare-and-set), so a restart or
// a redelivered receipt neither loses nor double-counts a part.

// partState is the final receipt of one part.
type partState struct {
	State  dlr.State `json:"state"`
	Stat   string    `json:"stat,omitempty"` // as the receipt said it ("UNDELIV")
	Err    string    `json:"err,omitempty"`
	SMSCID string    `json:"smsc_id"`
	Seq    int       `json:"seq"` // 1 for the first part recorded, 2 for the next, ...
}

// partsRecord is the value under a message's key in sms_receipt_parts. Done
// is keyed by part number ("1", "2", ...), or by "id:<smsc id>" for index
// entries that carry no part number.
type partsRecord struct {
	Parts int                  `json:"parts"`
	Done  map[string]partState `json:"done"`
}

// outcome decides the message from the parts recorded so far. The first part
// recorded that is not delivered decides it (undelivered for undelivered or
// rejected, expired for expired), so the answer never changes as more parts
// come in; otherwise it is delivered once Parts parts are, and not final before.
func (r partsRecord) outcome() (st string, by partState, final bool) {
	keys := make([]string, 0, len(r.Done))
	for k := range r.Done {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return r.Done[keys[i]].Seq < r.Done[keys[j]].Seq })
	delivered := 0
	for _, k := range keys {
		p := r.Done[k]
		switch p.State {
		case dlr.Delivered:
			delivered++
			by = p
		case dlr.Expired:
			return status.Expired, p, true
		default:
			return status.Undelivered, p, true
		}
	}
	if delivered >= r.Parts {
		return status.Delivered, by, true
	}
	return "", partState{}, false
}

// partKey names a part in partsRecord.Done.
func partKey(e dlr.IndexEntry, canonicalSMSCID string) string {
	if e.Part > 0 {
		return strconv.Itoa(e.Part)
	}
	return "id:" + canonicalSMSCID
}

// partsKey is the sms_receipt_parts key of a message id (encoded when the id
// is not a plain KV token).
func partsKey(id string) string { return dlr.Key("m", id) }

// casRounds bounds the compare-and-set loop; each lost round means another
// part's receipt was recorded in between, at most Parts-1 times.
const casRounds = 16

// recordPart stores p as the final receipt of part key of message e.ID, unless
// that part has one already. It returns the record as it stands after, and
// whether p was new.
func (s *Stage) recordPart(ctx context.Context, e dlr.IndexEntry, key string, p partState) (partsRecord, bool, error) {
	k := partsKey(e.ID)
	for range casRounds {
		rec := partsRecord{Parts: e.Parts, Done: map[string]partState{}}
		var rev uint64
		kve, err := s.parts.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return rec, false, fmt.Errorf("parts of %s: %w", e.ID, err)
		default:
			if err := json.Unmarshal(kve.Value(), &rec); err != nil {
				return rec, false, fmt.Errorf("parts of %s: unreadable: %w", e.ID, err)
			}
			if rec.Done == nil {
				rec.Done = map[string]partState{}
			}
			rev = kve.Revision()
		}
		if _, ok := rec.Done[key]; ok {
			return rec, false, nil
		}
		p.Seq = len(rec.Done) + 1
		rec.Done[key] = p
		data, _ := json.Marshal(rec)
		if rev == 0 {
			_, err = s.parts.Create(ctx, k, data)
		} else {
			_, err = s.parts.Update(ctx, k, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another part landed in between: read again
		}
		if err != nil {
			return rec, false, fmt.Errorf("parts of %s: %w", e.ID, err)
		}
		return rec, true, nil
	}
	return partsRecord{}, false, fmt.Errorf("parts of %s: lost the compare-and-set %d times", e.ID, casRounds)
}
