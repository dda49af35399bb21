package receipts

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/status"
)

// A link whose SMSC answers submit_sm_resp in hex and writes receipts in
// decimal (padded with zeros, too) is configured so: egress indexes under
// dlr.CanonicalID(id, hex), receipts looks up dlr.CanonicalID(id, decimal).
func TestALinkWithHexSubmitIDsAndDecimalReceiptsMatchesThem(t *testing.T) {
	h := start(t, Options{ReceiptIDs: map[string]dlr.IDForm{link: dlr.IDDecimal}})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i, tc := range []struct {
		name, resp string
		rec        dlr.Record
	}{
		{"a hex id in the text receipt as decimal", "00A3F1", dlr.Record{Text: text("41969", "DELIVRD", "000")}},
		{"a hex id in the TLV as zero-padded decimal", "FF", dlr.Record{ReceiptedID: "0000000255", MessageState: 2}},
		{"a 64-bit hex id", "FFFFFFFFFFFFFFFF", dlr.Record{ReceiptedID: "18446744073709551615", MessageState: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			id := fmt.Sprintf("01JMSG00000000000000000HX%d", i)
			if _, err := h.index.Put(ctx, dlr.Key(link, dlr.CanonicalID(tc.resp, dlr.IDHex)), []byte(`{"id":"`+id+`","parts":1,"part":1}`)); err != nil {
				t.Fatal(err)
			}
			h.receipt(tc.rec)
			h.waitCount(status.Delivered, float64(i+1))
			h.drained()
			h.onlyTerminal(id)
		})
	}
}

// With the default text form, ids that differ only in leading zeros are
// different ids: nothing is merged that the SMSC may mean as two.
func TestATextLinkKeepsLeadingZerosApart(t *testing.T) {
	h := start(t, Options{OrphanAfter: 300 * time.Millisecond})
	const id = "01JMSG0000000000000000ZERO"
	h.indexed("123", id)
	h.receipt(dlr.Record{Text: text("000123", "DELIVRD", "000")})
	h.waitCount("orphan", 1)
	h.drained()
	if evs := h.history(id); len(evs) != 0 {
		t.Fatalf("events = %+v, want none: 000123 is not 123 on a text link", evs)
	}
}
