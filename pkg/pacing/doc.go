// Package pacing is the per-link rate limiter: a GCRA bucket whose state
// lives in the KV bucket sms_pacing under "link.<name>", updated with
// compare-and-set, so every instance that sends on a link shares its rate.
//
// The guarantee: over any 1,000 ms, the submits on a link number at most
// rate + burst-1, and with burst 1 they are spaced Interval(rate) apart,
// however many instances send on it; a link kept busy gets 1 s/(1 s + Guard),
// 98.8%, of its rate. Reserve is the pure bucket math; Limiter leases slots from
// KV a few at a time and hands them to the link's workers at their time. How
// hosts with different clocks agree on slot times is described in clock.go.
//
// A strict SMSC (one that throttles rate+1 submits in any rolling second) needs
// burst 1: a burst above 1 is by definition sent on top of the rate.
package pacing
