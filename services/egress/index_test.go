package egress

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// indexParts numbers the parts and keys each under the canonical id of the
// link's submit_sm_resp form, so the receipts stage finds a decimal receipt
// id for a hex submit id.
func TestIndexPartsNumbersThePartsUnderTheLinksIDForm(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, streams.BucketDLRIndex)
	if err != nil {
		t.Fatal(err)
	}
	s := New(e.js, e.pub, []LinkOptions{{Name: "hex1", Pool: pool, RespIDs: dlr.IDHex}, {Name: "txt1", Pool: pool}},
		Options{}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	s.index = kv
	for _, tc := range []struct {
		link string
		ids  []string
		keys []string
	}{
		{"hex1", []string{"00FF", "0A", "ab-1"}, []string{"hex1.255", "hex1.10", "hex1.ab-1"}},
		{"txt1", []string{"00FF", "0A"}, []string{"txt1.00ff", "txt1.0a"}},
	} {
		if err := s.indexParts(ctx, tc.link, "m-"+tc.link, tc.ids, 7); err != nil {
			t.Fatal(err)
		}
		for i, k := range tc.keys {
			entry, err := kv.Get(ctx, k)
			if err != nil {
				t.Fatalf("%s part %d: key %s: %v", tc.link, i+1, k, err)
			}
			var v IndexEntry
			if err := json.Unmarshal(entry.Value(), &v); err != nil || v != (IndexEntry{ID: "m-" + tc.link, Parts: len(tc.ids), Part: i + 1, StatusSeq: 7}) {
				t.Fatalf("%s: %s = %s (%v), want id m-%s, parts %d, part %d", tc.link, k, entry.Value(), err, tc.link, len(tc.ids), i+1)
			}
		}
	}
}
