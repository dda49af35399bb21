package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/caps"
	"github.com/smsflow/smsflow/pkg/dedup"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/streams"
)

// policyRules builds the shared policy rules from [policy] on js's KV
// buckets. optOut is where opt-outs are read: the policy stage passes its
// in-memory view, the API (on_build) a store that reads the bucket.
// blacklist may be nil (no blacklist).
func policyRules(ctx context.Context, js jetstream.JetStream, p config.Policy, blacklist rules.Blacklist, optOut rules.OptOut) (*rules.Rules, error) {
	win, err := caps.NewWindow(p.TimeZone)
	if err != nil {
		return nil, err
	}
	capsKV, err := js.KeyValue(ctx, streams.BucketCaps)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", streams.BucketCaps, err)
	}
	dedupKV, err := js.KeyValue(ctx, streams.BucketDedup)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", streams.BucketDedup, err)
	}
	return &rules.Rules{
		Blacklist:        blacklist,
		OptOut:           optOut,
		Dedup:            dedup.New(dedupKV, p.DuplicateWindow).WriteVia(js.Conn()),
		Caps:             caps.NewCounter(capsKV, win, caps.Limits{Daily: p.DailyCap, Weekly: p.WeeklyCap}).WriteVia(js.Conn()),
		CapTransactional: p.CapTransactional,
	}, nil
}

// policyParts are the policy rules as the stages use them: the policy stage
// records what they decide (stage, reading opt-outs from view), the API's
// on_build only reads (build, reading opt-outs from the bucket); view is
// run beside the policy stage.
type policyParts struct {
	stage, build *rules.Rules
	store        *optout.Store
	view         *optout.View
}

func newPolicyParts(ctx context.Context, js jetstream.JetStream, p config.Policy, blacklist rules.Blacklist, log *slog.Logger) (policyParts, error) {
	kv, err := js.KeyValue(ctx, streams.BucketOptOut)
	if err != nil {
		return policyParts{}, fmt.Errorf("kv %s: %w", streams.BucketOptOut, err)
	}
	pp := policyParts{store: optout.NewStore(kv), view: optout.NewView(kv, log)}
	if pp.stage, err = policyRules(ctx, js, p, blacklist, pp.view); err != nil {
		return policyParts{}, err
	}
	if pp.build, err = policyRules(ctx, js, p, blacklist, pp.store); err != nil {
		return policyParts{}, err
	}
	return pp, nil
}
