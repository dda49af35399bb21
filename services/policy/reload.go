package policy

import "github.com/smsflow/smsflow/pkg/optout"

// SetCheck replaces the stage's checks (routes and rules, after a config
// reload) while it runs: each message is judged wholly by the checks it
// found when its turn came, old or new.
func (s *Stage) SetCheck(c Check) { s.check.Store(&c) }

// SetKeywords replaces the STOP/START keywords while the reader runs.
func (o *OptOuts) SetKeywords(k optout.Keywords) { o.words.Store(&k) }
