package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/smsflow/smsflow/services/smscsim"
)

// simCommand runs the SMSC simulator alone until ctx ends, for tests and
// benchmarks against a pipeline in another process.
func simCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("smsc-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o smscsim.Options
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:2775", "SMPP listen address")
	fs.StringVar(&o.SystemID, "system-id", "smsflow", "system_id binds must use")
	fs.StringVar(&o.Password, "password", "secret", "password binds must use")
	fs.DurationVar(&o.ReceiptDelay, "receipt-delay", 0, "delay before each delivery receipt")
	fs.BoolVar(&o.NoReceipts, "no-receipts", false, "send no delivery receipts")
	fs.IntVar(&o.MaxPerSecond, "max-per-second", 0, "strict rolling-second submit limit, answered with 0x58 (0: none)")
	fs.DurationVar(&o.RespDelay, "resp-delay", 0, "delay before each submit_sm_resp")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: smsc-sim takes no arguments, got %q", errUsage, fs.Args())
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, nil)).With("component", "smsc-sim")
	sim, err := smscsim.Start(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "smsc-sim listening on %s\n", sim.Addr())
	<-ctx.Done()
	if err := sim.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "smsc-sim stopped: %d accepted, %d throttled, %d rejected, %d receipts acked\n",
		sim.Accepted(), sim.Throttled(), sim.Rejected(), sim.ReceiptsAcked())
	return nil
}
