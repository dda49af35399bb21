package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
)

// `smsflow send` on a 10,000-row CSV, interrupted with SIGINT midway and run
// again: every row is sent exactly once, under one id, with its own text.
func TestSendInterruptedAndRunAgainSendsEachRowOnce(t *testing.T) {
	// With receipts, so --follow sees every row reach its final status.
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e"})
	p := setup(t, t.TempDir(), sim.Addr(), "")
	p.env = []string{"SMSFLOW_LINKS__L1__RATE=20000", "SMSFLOW_LINKS__L1__BURST=200", "SMSFLOW_LOG__LEVEL=warn"}
	p.start()
	_, js := p.connect()

	const rows = 10000
	var csv strings.Builder
	csv.WriteString("name,number,city\n")
	for i := range rows {
		fmt.Fprintf(&csv, "Name%d,%s,\"City, %d\"\n", i, number(i), i)
	}
	file := filepath.Join(t.TempDir(), "contacts.csv")
	if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"send", "--file", file, "--campaign", "spring-sale", "--text", "Hi {{.name}} from {{.city}}",
		"--api", "http://" + p.httpAddr, "--batch", "50"}

	// A dry run queues nothing and lists the rows policy would refuse.
	dry, err := exec.Command(binary, append(args, "--dry-run")...).CombinedOutput()
	if err != nil {
		t.Errorf("dry run failed: %v\n%s", err, dry)
	}
	if !strings.Contains(string(dry), "nothing was queued") {
		t.Errorf("dry run output:\n%s", dry)
	}
	ctx0, cancel0 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel0()
	s0, err := js.Stream(ctx0, "SMS_OUTBOUND")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s0.Info(ctx0); err != nil {
		t.Fatal(err)
	} else if info.State.Msgs != 0 {
		t.Fatalf("after the dry run SMS_OUTBOUND holds %d messages, want 0", info.State.Msgs)
	}
	t.Logf("dry run: %s", lastLine(string(dry)))

	// First run: interrupted once a quarter of the rows are in the stream.
	first := exec.Command(binary, args...)
	var out1 natstest.Buffer
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outbound, err := js.Stream(ctx, "SMS_OUTBOUND")
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, time.Minute, "a quarter of the rows queued", func() bool {
		info, err := outbound.Info(ctx)
		return err == nil && info.State.Msgs >= rows/4
	})
	if err := first.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err == nil {
			t.Fatalf("first send finished before the interrupt; the test proves nothing\n%s", out1.Tail(2048))
		}
	case <-time.After(time.Minute):
		t.Fatal("send still running a minute after SIGINT")
	}
	info, _ := outbound.Info(ctx)
	if !strings.Contains(out1.String(), "interrupted after") {
		t.Errorf("interrupted send does not say so:\n%s", out1.Tail(2048))
	}
	t.Logf("interrupted with %d of %d rows queued", info.State.Msgs, rows)

	// Second run: the whole file again, following the campaign to its end
	// (GET /v1/campaigns/{campaign}): every row final, each once.
	out2, err := exec.Command(binary, append(args, "--follow", "--follow-for", "2m")...).CombinedOutput()
	if err != nil {
		t.Fatalf("second send: %v\n%s", err, out2)
	}
	if !strings.Contains(string(out2), fmt.Sprintf("%d rows queued, 0 invalid", rows)) {
		t.Errorf("second send output:\n%s", out2)
	}
	if want := fmt.Sprintf("campaign spring-sale: %d of %d final map[delivered:%d]", rows, rows, rows); !strings.Contains(string(out2), want) {
		t.Errorf("--follow did not end with %q:\n%s", want, lastLine(string(out2)))
	}
	natstest.Eventually(t, 2*time.Minute, fmt.Sprintf("simulator accepts %d submits", rows), func() bool { return sim.Accepted() >= rows })
	time.Sleep(time.Second) // a doubled row would land now
	if got := sim.Accepted(); got != rows {
		t.Errorf("simulator accepted %d submits for %d rows", got, rows)
	}
	texts := map[string]string{}
	for _, s := range sim.Submits() {
		if prev, dup := texts[s.Dest]; dup {
			t.Errorf("%s submitted twice (%q, %q)", s.Dest, prev, s.ShortMessage)
		}
		texts[s.Dest] = string(s.ShortMessage)
	}
	for i := range rows {
		if want := fmt.Sprintf("Hi Name%d from City, %d", i, i); texts[simDest(i)] != want {
			t.Fatalf("row %d: submitted text %q, want %q", i, texts[simDest(i)], want)
		}
	}
	// One id per row: the status stream holds exactly rows distinct subjects.
	status, err := js.Stream(ctx, "SMS_STATUS")
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, fmt.Sprintf("%d distinct message ids in SMS_STATUS", rows), func() bool {
		info, err := status.Info(ctx)
		return err == nil && info.State.NumSubjects == rows
	})
	info, _ = outbound.Info(ctx)
	if info.State.Msgs != rows {
		t.Errorf("SMS_OUTBOUND holds %d messages for %d rows: the re-run was not deduplicated", info.State.Msgs, rows)
	}
	p.stop()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
