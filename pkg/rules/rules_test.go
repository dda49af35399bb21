package rules_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/caps"
	"github.com/smsflow/smsflow/pkg/dedup"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

type set map[string]bool

func (s set) Contains(n string) bool { return s[n] }

func newRules(t *testing.T, lim caps.Limits) (*rules.Rules, *optout.Store) {
	t.Helper()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx := context.Background()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	kv := func(b string) jetstream.KeyValue {
		k, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	w, _ := caps.NewWindow("UTC")
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	store := optout.NewStore(kv(streams.BucketOptOut))
	return &rules.Rules{
		Blacklist: set{"+420600000666": true},
		OptOut:    store,
		Dedup:     dedup.New(kv(streams.BucketDedup), 10*time.Minute),
		Caps:      caps.NewCounter(kv(streams.BucketCaps), w, lim),
		Now:       func() time.Time { return now },
	}, store
}

func msg(id, to, text, kind string) envelope.Message {
	return envelope.Message{ID: id, To: to, Text: text, Kind: kind}
}

func TestDecideRunsEveryRuleInOrderAndRecords(t *testing.T) {
	r, store := newRules(t, caps.Limits{Daily: 2, Weekly: 10})
	ctx := context.Background()
	if err := store.Set(ctx, "+420600000002", optout.Record{OptedOut: true, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		m    envelope.Message
		want string
	}{
		{"a blacklisted number is refused, transactional or not", msg("b1", "+420600000666", "x", envelope.Transactional), status.ReasonBlacklist},
		{"an opted-out number gets no marketing", msg("o1", "+420600000002", "sale", ""), status.ReasonOptedOut},
		{"an opted-out number still gets a transactional message", msg("o2", "+420600000002", "code 1", envelope.Transactional), ""},
		{"a first marketing message passes", msg("c1", "+420600000001", "one", ""), ""},
		{"the same text again is a duplicate", msg("c2", "+420600000001", "one", ""), status.ReasonDuplicate},
		{"the first message redelivered passes again", msg("c1", "+420600000001", "one", ""), ""},
		{"a second text is the day's second", msg("c3", "+420600000001", "two", ""), ""},
		{"a third breaks the daily cap of 2", msg("c4", "+420600000001", "three", ""), status.ReasonDailyCP},
		{"a transactional message is exempt from the caps", msg("t1", "+420600000001", "code 2", envelope.Transactional), ""},
	} {
		v, err := r.Decide(ctx, tc.m)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if v.Reason != tc.want || (v.Reason != "" && v.Detail == "") {
			t.Errorf("%s: verdict %+v, want reason %q with a detail", tc.name, v, tc.want)
		}
	}
}

func TestPreviewCountsTheRequestsOwnMessagesAndRecordsNothing(t *testing.T) {
	r, _ := newRules(t, caps.Limits{Daily: 3, Weekly: 10})
	ctx := context.Background()
	// One already sent today.
	if v, err := r.Decide(ctx, msg("sent-1", "+420600000001", "earlier", "")); err != nil || v.Reason != "" {
		t.Fatalf("decide: %+v %v", v, err)
	}
	batch := []struct {
		m    envelope.Message
		want string
	}{
		{msg("p1", "+420600000001", "a", ""), ""},
		{msg("p2", "+420600000001", "earlier", ""), status.ReasonDuplicate}, // the text sent-1 claimed
		{msg("p3", "+420600000001", "b", ""), ""},
		{msg("p4", "+420600000001", "b", ""), status.ReasonDuplicate}, // p3's text, in this request
		{msg("p5", "+420600000001", "c", ""), status.ReasonDailyCP},   // sent-1, p1, p3
		{msg("p6", "+420600000666", "c", ""), status.ReasonBlacklist},
		{msg("p7", "+420600000009", "c", envelope.Transactional), ""},
	}
	for pass := range 2 { // twice: the first preview must have recorded nothing
		p := r.NewPreview()
		for _, b := range batch {
			v, err := p.Check(ctx, b.m)
			if err != nil {
				t.Fatal(err)
			}
			if v.Reason != b.want {
				t.Errorf("preview %d, %s: reason %q, want %q", pass, b.m.ID, v.Reason, b.want)
			}
		}
	}
	u, _, err := r.Caps.Peek(ctx, "+420600000001", "p1", r.Now())
	if err != nil || u.Day != 1 {
		t.Fatalf("usage after two previews = %+v, %v; want 1 (only sent-1 counted)", u, err)
	}
	// A message already counted (its request sent again) is judged as passing.
	if v, err := r.NewPreview().Check(ctx, msg("sent-1", "+420600000001", "earlier", "")); err != nil || v.Reason != "" {
		t.Fatalf("preview of the counted sent-1 = %+v, %v; want it to pass", v, err)
	}
}
