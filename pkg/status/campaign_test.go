package status

import (
	"strings"
	"testing"
)

// Any campaign name becomes one subject token (no '.', '*', '>', spaces or
// control characters), and two names never share one.
func FuzzCampaignToken(f *testing.F) {
	for _, s := range []string{"bf-2026", "black friday/2026", "a.b", "=YQ", "*", ">", "é", "x\x00y", ""} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ta := campaignToken(a)
		if ta == "" || strings.ContainsAny(ta, ".*> \t\r\n\x00") {
			t.Fatalf("campaignToken(%q) = %q: not one subject token", a, ta)
		}
		if a != b && ta == campaignToken(b) {
			t.Fatalf("campaigns %q and %q share the token %q", a, b, ta)
		}
	})
}

func TestTransitionMovesOneMessage(t *testing.T) {
	if d := Transition("c", "", Accepted); len(d) != 2 || d[0] != (Delta{"sms.count.c.total", 1}) || d[1] != (Delta{"sms.count.c.accepted", 1}) {
		t.Fatalf("first status: %v", d)
	}
	if d := Transition("c", Queued, Submitted); len(d) != 2 || d[0] != (Delta{"sms.count.c.queued", -1}) || d[1] != (Delta{"sms.count.c.submitted", 1}) {
		t.Fatalf("a move: %v", d)
	}
	if d := Transition("c", Submitted, Submitted); d != nil {
		t.Fatalf("no move: %v", d)
	}
	if d := Transition("", "", Accepted); d != nil {
		t.Fatalf("no campaign: %v", d)
	}
}
