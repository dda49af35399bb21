//go:build race

package egress

// raceEnabled: the race detector slows JetStream about tenfold, so the
// largest runs are scaled down under it (see the kill test).
const raceEnabled = true
