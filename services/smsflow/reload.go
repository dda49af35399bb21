package main

import (
	"context"
	"fmt"
	"reflect"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/services/ingest"
	"github.com/smsflow/smsflow/services/policy"
)

// reloadable are the running parts a config reload swaps (nil: not run here).
type reloadable struct {
	policy  *policy.Stage
	optOuts *policy.OptOuts
	api     *ingest.API
}

// reloadPolicy applies next's policy config while running: caps, duplicate
// window, time zone, keywords, the default pool and the pools' prefixes
// (routes). Everything else (links, pools' links, listeners, NATS, the
// region and text limit) needs a restart: a reload that changes any of it
// is refused whole, so the running config is never half old, half new.
func (r reloadable) reloadPolicy(ctx context.Context, js jetstream.JetStream, cur, next config.Config, bl rules.Blacklist, pp policyParts) error {
	if err := restartOnly(cur, next); err != nil {
		return err
	}
	stage, err := policyRules(ctx, js, next.Policy, bl, pp.view)
	if err != nil {
		return err
	}
	build, err := policyRules(ctx, js, next.Policy, bl, pp.store)
	if err != nil {
		return err
	}
	if r.policy != nil {
		r.policy.SetCheck(policy.Chain(policy.NewRoutes(poolPrefixes(next), next.Policy.DefaultPool), policy.Rules(stage)))
	}
	if r.optOuts != nil {
		r.optOuts.SetKeywords(optout.NewKeywords(next.Policy.StopKeywords, next.Policy.StartKeywords))
	}
	if r.api != nil {
		r.api.SetRules(build)
	}
	return nil
}

// restartOnly names the first change between cur and next that a reload
// cannot apply.
func restartOnly(cur, next config.Config) error {
	same := func(name string, a, b any) error {
		if !reflect.DeepEqual(a, b) {
			return fmt.Errorf("%s changed: that needs a restart", name)
		}
		return nil
	}
	links := func(c config.Config) map[string][]string {
		out := map[string][]string{}
		for name, p := range c.Pools {
			out[name] = p.Links
		}
		return out
	}
	for _, err := range []error{
		same("nats", cur.NATS, next.NATS),
		same("http", cur.HTTP, next.HTTP),
		same("smsc_sim", cur.SMSCSim, next.SMSCSim),
		same("links", cur.Links, next.Links),
		same("pools' links", links(cur), links(next)),
		same("policy.default_region", cur.Policy.DefaultRegion, next.Policy.DefaultRegion),
		same("policy.max_text_chars", cur.Policy.MaxTextChars, next.Policy.MaxTextChars),
		same("egress", cur.Egress, next.Egress),
		same("receipts", cur.Receipts, next.Receipts),
		same("blacklist", cur.Blacklist, next.Blacklist),
		same("webhooks", cur.Webhooks, next.Webhooks),
		same("log", cur.Log, next.Log),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}
