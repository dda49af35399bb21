package policy

import (
	"context"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/rules"
)

// Rules adapts the shared rules (blacklist, opt-out, duplicate window,
// frequency caps) to a Check. They record what they decide (the duplicate
// window is claimed, the caps counted), so put them after every check that
// can still reject for another reason (routing): a message refused by a
// later check would have used up a cap.
func Rules(r *rules.Rules) Check {
	return CheckFunc(func(ctx context.Context, m envelope.Message) (Decision, error) {
		v, err := r.Decide(ctx, m)
		return Decision{Reject: v.Reason, Detail: v.Detail}, err
	})
}
