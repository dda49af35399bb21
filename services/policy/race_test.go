//go:build race

package policy

// raceEnabled: the race detector slows the stage several times over, so the
// big runs shrink by default (see capsRunSize).
const raceEnabled = true
