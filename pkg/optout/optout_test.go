package optout_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/streams"
)

func TestKeywordsIgnoreCaseAccentsAndSurroundingPunctuation(t *testing.T) {
	k := optout.NewKeywords([]string{"Odhlásit", "KONEC"}, []string{"Přihlásit"})
	for _, tc := range []struct {
		text string
		want optout.Action
	}{
		{"STOP", optout.Stop},
		{"stop", optout.Stop},
		{"  Stop!  ", optout.Stop},
		{"STÓP", optout.Stop},
		{"Unsubscribe.", optout.Stop},
		{"odhlasit", optout.Stop},
		{"ODHLÁSIT", optout.Stop},
		{"konec", optout.Stop},
		{"start", optout.Start},
		{"Start 🙂", optout.Start},
		{"PRIHLASIT", optout.Start},
		{"please stop", optout.None},
		{"stopped", optout.None},
		{"", optout.None},
		{"STOP STOP", optout.None},
	} {
		if got := k.Classify(tc.text); got != tc.want {
			t.Errorf("Classify(%q) = %d, want %d", tc.text, got, tc.want)
		}
	}
}

func FuzzFold(f *testing.F) {
	for _, s := range []string{"STOP", "stóp!", "", "\xff\xfe", "  a  b  ", "🙂"} {
		f.Add(s)
	}
	k := optout.NewKeywords(nil, nil)
	f.Fuzz(func(t *testing.T, s string) {
		once := optout.Fold(s)
		if again := optout.Fold(once); again != once {
			t.Fatalf("Fold is not stable: %q -> %q -> %q", s, once, again)
		}
		_ = k.Classify(s) // never panics
	})
}

func TestSenderOfAnInboundMessage(t *testing.T) {
	for _, tc := range []struct {
		name, from, want string
	}{
		{"international without +", "420600000001", "+420600000001"},
		{"international with +", "+420600000002", "+420600000002"},
		{"international with 00", "00420600000003", "+420600000003"},
		{"a national number in the region", "600000004", "+420600000004"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := optout.Sender(tc.from, "CZ")
			if err != nil || got != tc.want {
				t.Errorf("Sender(%q) = %q, %v; want %q", tc.from, got, err, tc.want)
			}
		})
	}
	if _, err := optout.Sender("ACME", "CZ"); err == nil {
		t.Error("Sender of an alphanumeric source = nil error, want it refused")
	}
}

func TestTheLastReplyWinsWhateverOrderItIsStoredInAndTheViewFollows(t *testing.T) {
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	ctx := context.Background()
	if err := streams.Apply(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BucketOptOut)
	if err != nil {
		t.Fatal(err)
	}
	s := optout.NewStore(kv)
	v := optout.NewView(kv, slog.New(slog.DiscardHandler))
	if _, err := v.OptedOut(ctx, "+420600000001"); err != optout.ErrNotReady {
		t.Fatalf("OptedOut before the view loaded: %v, want ErrNotReady", err)
	}
	vctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- v.Run(vctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("view: %v", err)
		}
	})
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("view not ready after 10s")
	}

	const n = "+420600000001"
	// START (seq 7) is stored before the older STOP (seq 5): START stays.
	for _, r := range []optout.Record{{OptedOut: false, Seq: 7}, {OptedOut: true, Seq: 5}} {
		if err := s.Set(ctx, n, r); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := s.OptedOut(ctx, n); err != nil || out {
		t.Fatalf("after START (7) then an older STOP (5): opted out = %v, %v; want false", out, err)
	}
	if err := s.Set(ctx, n, optout.Record{OptedOut: true, Seq: 9}); err != nil {
		t.Fatal(err)
	}
	if out, err := s.OptedOut(ctx, n); err != nil || !out {
		t.Fatalf("after a newer STOP (9): opted out = %v, %v; want true", out, err)
	}
	natstest.Eventually(t, 10*time.Second, "the view sees the STOP", func() bool {
		out, err := v.OptedOut(ctx, n)
		return err == nil && out
	})
	if out, _ := v.OptedOut(ctx, "+420600000002"); out {
		t.Error("a number that never wrote is opted out in the view")
	}
	if err := s.Set(ctx, n, optout.Record{OptedOut: false, Seq: 10}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "the view sees the START", func() bool {
		out, err := v.OptedOut(ctx, n)
		return err == nil && !out
	})
}
