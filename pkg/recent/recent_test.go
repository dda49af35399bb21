package recent

import (
	"fmt"
	"testing"
)

func TestAMapKeepsTheRecentAndForgetsTheOld(t *testing.T) {
	m := New[string, string](4) // two generations of 2
	m.Put("a", "https://a.example/hook")
	m.Put("b", "")
	if v, ok := m.Get("a"); !ok || v != "https://a.example/hook" {
		t.Fatalf("a = %q, %v; want its value", v, ok)
	}
	if v, ok := m.Get("b"); !ok || v != "" {
		t.Fatalf("b = %q, %v; want known, empty", v, ok)
	}
	if _, ok := m.Get("x"); ok {
		t.Fatal("x was never put but is known")
	}
	m.Put("b", "again") // an update does not age the generation
	m.Put("c", "c")     // a, b become the old generation
	if v, ok := m.Get("b"); !ok || v != "again" {
		t.Fatalf("b = %q, %v; want the updated value one generation on", v, ok)
	}
	m.Put("d", "")
	m.Put("e", "") // c, d old; a, b dropped
	if _, ok := m.Get("a"); ok {
		t.Fatal("a still known two generations later")
	}
	for _, k := range []string{"c", "d", "e"} {
		if _, ok := m.Get(k); !ok {
			t.Fatalf("%s forgotten too early", k)
		}
	}
	m.Delete("d")
	if _, ok := m.Get("d"); ok {
		t.Fatal("d known after Delete")
	}
	for i := range 100 {
		m.Put(fmt.Sprint(i), "")
	}
	if n := len(m.young) + len(m.old); n > 4 {
		t.Fatalf("%d entries after 100 puts, want at most 4", n)
	}
}
