package policy

import (
	"context"
	"sort"
	"strings"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
)

// Reason is why a message is rejected: a closed set (status.Reason*), both the
// status reason and a metric label.
type Reason = string

// Decision is a check's verdict on one message.
type Decision struct {
	Reject Reason // "" lets it through
	Detail string // for people: what exactly was wrong
	Pool   string // set by the routing check
}

// Check decides on one message. An error means "could not decide" (KV down,
// say): the message is retried, never rejected for it.
type Check interface {
	Check(ctx context.Context, m envelope.Message) (Decision, error)
}

// CheckFunc adapts a function to Check.
type CheckFunc func(ctx context.Context, m envelope.Message) (Decision, error)

// Check calls f.
func (f CheckFunc) Check(ctx context.Context, m envelope.Message) (Decision, error) { return f(ctx, m) }

// Chain runs checks in order and stops at the first rejection or error. The
// pool of the last check that set one wins.
func Chain(checks ...Check) Check {
	return CheckFunc(func(ctx context.Context, m envelope.Message) (Decision, error) {
		var out Decision
		for _, c := range checks {
			d, err := c.Check(ctx, m)
			if err != nil || d.Reject != "" {
				return d, err
			}
			if d.Pool != "" {
				out.Pool = d.Pool
			}
		}
		return out, nil
	})
}

// Routes picks a message's pool: its own `route` when that names a pool,
// else the pool with the longest E.164 prefix matching the recipient, else
// the default pool; otherwise the message is rejected with no_route.
type Routes struct {
	pools    map[string]bool
	prefixes []prefixRoute // longest first
	def      string
}

type prefixRoute struct{ prefix, pool string }

// NewRoutes builds the routing table: prefixes maps a pool to its E.164
// prefixes ("+420"); def may be "".
func NewRoutes(prefixes map[string][]string, def string) *Routes {
	r := &Routes{pools: map[string]bool{}, def: def}
	if def != "" {
		r.pools[def] = true // a route may name the default pool
	}
	for pool, ps := range prefixes {
		r.pools[pool] = true
		for _, p := range ps {
			r.prefixes = append(r.prefixes, prefixRoute{prefix: p, pool: pool})
		}
	}
	sort.Slice(r.prefixes, func(i, j int) bool {
		if len(r.prefixes[i].prefix) != len(r.prefixes[j].prefix) {
			return len(r.prefixes[i].prefix) > len(r.prefixes[j].prefix)
		}
		return r.prefixes[i].prefix < r.prefixes[j].prefix
	})
	return r
}

// Check implements Check. The recipient must already be E.164.
func (r *Routes) Check(_ context.Context, m envelope.Message) (Decision, error) {
	if m.Route != "" {
		if r.pools[m.Route] {
			return Decision{Pool: m.Route}, nil
		}
		return Decision{Reject: status.ReasonNoRoute, Detail: "route " + m.Route + " is not a configured pool"}, nil
	}
	for _, p := range r.prefixes {
		if strings.HasPrefix(m.To, p.prefix) {
			return Decision{Pool: p.pool}, nil
		}
	}
	if r.def != "" {
		return Decision{Pool: r.def}, nil
	}
	return Decision{Reject: status.ReasonNoRoute, Detail: "no pool serves " + m.To}, nil
}
