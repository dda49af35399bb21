package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/streams"
)

// The nats CLI itself accepts every definition in streams/: the contract is
// that `nats stream add --config streams/X.json` works. .ci/run installs the
// CLI and sets REQUIRE_NATS_CLI=1; elsewhere the test skips without it.
func TestTheNatsCLIAcceptsEveryDefinition(t *testing.T) {
	cli, err := exec.LookPath("nats")
	if err != nil {
		if os.Getenv("REQUIRE_NATS_CLI") != "" {
			t.Fatal("REQUIRE_NATS_CLI is set but the nats CLI is not on PATH (go install github.com/nats-io/natscli/nats@v0.5.1)")
		}
		t.Skip("nats CLI not on PATH (go install github.com/nats-io/natscli/nats@v0.5.1)")
	}
	srv := natstest.RunServer(t, t.TempDir())
	nats := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"--server", srv.ClientURL(), "--no-context"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	streamsDir := filepath.Join("..", "streams")
	files, err := filepath.Glob(filepath.Join(streamsDir, "SMS_*.json"))
	defs, derr := streams.Streams()
	if err != nil || derr != nil || len(files) != len(defs) {
		t.Fatalf("stream files: %v %v; the binary embeds %d definitions (%v)", files, err, len(defs), derr)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		nats("stream", "add", "--config", f)
		if out := nats("stream", "info", name, "--json"); !strings.Contains(out, `"name": "`+name+`"`) {
			t.Errorf("stream %s not created from %s:\n%s", name, f, out)
		}
	}
	consumers, err := filepath.Glob(filepath.Join(streamsDir, "consumers", "*.json"))
	if err != nil || len(consumers) == 0 {
		t.Fatalf("consumer files: %v %v", consumers, err)
	}
	for _, f := range consumers {
		stream := strings.SplitN(filepath.Base(f), "-", 2)[0]
		nats("consumer", "add", stream, "--config", f)
	}
	if out := nats("consumer", "ls", "SMS_OUTBOUND", "--names"); !strings.Contains(out, "policy") {
		t.Errorf("policy consumer missing:\n%s", out)
	}
}
