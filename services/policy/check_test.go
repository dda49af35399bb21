package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
)

func TestRoutesPickAPool(t *testing.T) {
	prefixes := map[string][]string{"cz": {"+420"}, "czmobile": {"+4206", "+4207"}, "uk": {"+44"}, "empty": nil}
	for _, tc := range []struct {
		name       string
		def        string
		m          envelope.Message
		wantPool   string
		wantReject string
	}{
		{name: "a route naming a pool is used as is", m: envelope.Message{To: "+420600000001", Route: "uk"}, wantPool: "uk"},
		{name: "a route naming a pool without prefixes is used as is", m: envelope.Message{To: "+420600000001", Route: "empty"}, wantPool: "empty"},
		{name: "a route naming the default pool is used even when no prefix names it", def: "fallback", m: envelope.Message{To: "+420600000001", Route: "fallback"}, wantPool: "fallback"},
		{name: "a route naming an unknown pool is rejected with no_route", def: "cz", m: envelope.Message{To: "+420600000001", Route: "nowhere"}, wantReject: status.ReasonNoRoute},
		{name: "the longest prefix wins", m: envelope.Message{To: "+420700000001"}, wantPool: "czmobile"},
		{name: "a shorter prefix serves the rest of its range", m: envelope.Message{To: "+420212345678"}, wantPool: "cz"},
		{name: "an unmatched number goes to the default pool", def: "cz", m: envelope.Message{To: "+15550100"}, wantPool: "cz"},
		{name: "an unmatched number without a default is rejected with no_route", m: envelope.Message{To: "+15550100"}, wantReject: status.ReasonNoRoute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewRoutes(prefixes, tc.def).Check(context.Background(), tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if d.Pool != tc.wantPool || d.Reject != tc.wantReject {
				t.Fatalf("decision = %+v, want pool %q reject %q", d, tc.wantPool, tc.wantReject)
			}
			if d.Reject != "" && d.Detail == "" {
				t.Error("a rejection without a detail")
			}
		})
	}
}

func TestChainStopsAtTheFirstRejectionOrError(t *testing.T) {
	errKV := errors.New("kv unavailable")
	pass := func(pool string) Check {
		return CheckFunc(func(context.Context, envelope.Message) (Decision, error) { return Decision{Pool: pool}, nil })
	}
	reject := func(r Reason) Check {
		return CheckFunc(func(context.Context, envelope.Message) (Decision, error) {
			return Decision{Reject: r, Detail: "because"}, nil
		})
	}
	fail := CheckFunc(func(context.Context, envelope.Message) (Decision, error) { return Decision{}, errKV })
	for _, tc := range []struct {
		name       string
		checks     func(never Check) []Check
		wantPool   string
		wantReject string
		wantErr    error
	}{
		{name: "an empty chain lets everything through", checks: func(Check) []Check { return nil }},
		{name: "the pool of the last check that set one wins", checks: func(Check) []Check { return []Check{pass("a"), pass(""), pass("b"), pass("")} }, wantPool: "b"},
		{name: "a rejection stops the chain", checks: func(never Check) []Check { return []Check{pass("a"), reject(status.ReasonBlacklist), never} }, wantReject: status.ReasonBlacklist},
		{name: "an error stops the chain and is returned", checks: func(never Check) []Check { return []Check{pass("a"), fail, never} }, wantErr: errKV},
	} {
		t.Run(tc.name, func(t *testing.T) {
			never := CheckFunc(func(context.Context, envelope.Message) (Decision, error) {
				t.Error("a check after the chain stopped ran")
				return Decision{}, nil
			})
			d, err := Chain(tc.checks(never)...).Check(context.Background(), envelope.Message{To: "+420600000001"})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if d.Reject != tc.wantReject {
				t.Errorf("reject = %q, want %q", d.Reject, tc.wantReject)
			}
			if tc.wantErr == nil && tc.wantReject == "" && d.Pool != tc.wantPool {
				t.Errorf("pool = %q, want %q", d.Pool, tc.wantPool)
			}
		})
	}
}

func TestClipBoundsADetailOnARuneBoundary(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		n    int
	}{
		{name: "a short detail is kept whole", in: "text: required", n: 64},
		{name: "a long ASCII detail is cut and marked", in: strings.Repeat("a", 5000), n: 64},
		{name: "a long detail of multi-byte runes is cut between runes", in: strings.Repeat("ž", 5000), n: 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clip(tc.in, tc.n)
			if len(got) > tc.n || !utf8.ValidString(got) {
				t.Fatalf("clip = %q (%d bytes), want valid UTF-8 of at most %d bytes", got, len(got), tc.n)
			}
			if len(tc.in) <= tc.n && got != tc.in {
				t.Fatalf("clip = %q, want %q unchanged", got, tc.in)
			}
			if len(tc.in) > tc.n && !strings.HasSuffix(got, "(truncated)") {
				t.Fatalf("clip = %q, want the cut marked", got)
			}
		})
	}
}
