package webhooks

import (
	"fmt"
	"testing"
)

func TestURLCacheKeepsTheRecentAndForgetsTheOld(t *testing.T) {
	c := newURLCache(4) // two generations of 2
	c.put("a", "https://a.example/hook")
	c.put("b", "")
	if u, ok := c.get("a"); !ok || u != "https://a.example/hook" {
		t.Fatalf("a = %q, %v; want its URL", u, ok)
	}
	if u, ok := c.get("b"); !ok || u != "" {
		t.Fatalf("b = %q, %v; want known, no URL", u, ok)
	}
	if _, ok := c.get("x"); ok {
		t.Fatal("x was never put but is known")
	}
	c.put("c", "https://c.example") // a, b become the old generation
	if _, ok := c.get("a"); !ok {
		t.Fatal("a forgotten one put after it was full: want it kept one generation more")
	}
	c.put("d", "")
	c.put("e", "") // c, d old; a, b dropped
	if _, ok := c.get("a"); ok {
		t.Fatal("a still known two generations later")
	}
	for _, id := range []string{"c", "d", "e"} {
		if _, ok := c.get(id); !ok {
			t.Fatalf("%s forgotten too early", id)
		}
	}
	for i := range 100 {
		c.put(fmt.Sprint(i), "")
	}
	if n := len(c.young) + len(c.old); n > 4 {
		t.Fatalf("%d entries after 100 puts, want at most 4", n)
	}
}
