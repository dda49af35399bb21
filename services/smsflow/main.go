// Command smsflow is the SMS dispatch pipeline: one binary for every stage,
// and the tools around it.
//
//	smsflow run [--config FILE] [--stages policy,egress,receipts,http]
//	smsflow smsc-sim [--listen ADDR] [--system-id ID] [--password PW] ...
//	smsflow send --file contacts.csv --text 'Hi {{.name}}' --campaign C [--dry-run] [--follow]
//	smsflow bench [--messages N] [--links L] [--rate R] [--receipts] [--json] ...
//
// main only maps SIGINT/SIGTERM to a context and calls the command; the
// commands are the one place where stages are built and wired together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `smsflow: SMS dispatch on NATS JetStream

Usage:
  smsflow run [--config FILE] [--stages LIST]   run the pipeline (embedded NATS and simulator by default)
  smsflow smsc-sim [flags]                      run the SMPP SMSC simulator alone
  smsflow bench [flags]                         measure the pipeline in process (smsflow bench -h)
  smsflow send --file F --text T --campaign C   send a campaign from a CSV file over the HTTP API
  smsflow help                                  this text

Config: embedded defaults, then --config FILE (TOML), then SMSFLOW_SECTION__KEY
environment variables (SMSFLOW_NATS__DATA_DIR=/var/lib/smsflow).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Environ); err != nil {
		fmt.Fprintln(os.Stderr, "smsflow:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, environ func() []string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stderr, environ)
	case "smsc-sim":
		return simCommand(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCommand(ctx, args[1:], stdout, stderr)
	case "send":
		return sendCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
}
