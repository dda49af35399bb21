package status

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Campaign counts live in the counter stream SMS_COUNTS (allow_msg_counter):
// one counter per campaign and status on sms.count.<campaign>.<status>, and
// sms.count.<campaign>.total for the messages seen. The status indexer adds to
// them; reading a campaign is one direct get per status, whatever its size.

// CountsStream is the counter stream of the campaign counts.
const CountsStream = "SMS_COUNTS"

// Statuses lists every status a message can have, in life order.
var Statuses = []string{Accepted, Scheduled, Released, Queued, Submitted, Rejected, Delivered, Undelivered, Expired, Failed}

// IsStatus reports whether s is a status, not an attempt record (retry,
// throttled, submit_unknown): only statuses change what a message is.
func IsStatus(s string) bool {
	switch s {
	case Accepted, Scheduled, Released, Queued, Submitted, Rejected, Delivered, Undelivered, Expired, Failed:
		return true
	}
	return false
}

var plainToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// campaignToken is the campaign as one subject token: itself when it is made
// of letters, digits, '-' and '_', else "=" and its base64url, which no plain
// name can start with.
func campaignToken(campaign string) string {
	if plainToken.MatchString(campaign) {
		return campaign
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(campaign))
}

// CountSubject is the counter subject of a campaign's status, or of its total.
func CountSubject(campaign, statusOrTotal string) string {
	return "sms.count." + campaignToken(campaign) + "." + statusOrTotal
}

// Delta is one change to a campaign counter.
type Delta struct {
	Subject string
	By      int64
}

// Transition is the counter changes of a message moving from one status to
// another in a campaign: from "" is its first status, so the total grows.
func Transition(campaign, from, to string) []Delta {
	if campaign == "" || from == to {
		return nil
	}
	var out []Delta
	if from == "" {
		out = append(out, Delta{CountSubject(campaign, "total"), 1})
	} else {
		out = append(out, Delta{CountSubject(campaign, from), -1})
	}
	return append(out, Delta{CountSubject(campaign, to), 1})
}

// AddCounts applies ds to the counters, each with the Nats-Msg-Id key+"."+its
// subject, so applying the same ds under the same key again within the
// stream's duplicate window changes nothing. It returns once every add is
// stored.
func AddCounts(ctx context.Context, js jetstream.JetStream, key string, ds []Delta) error {
	// Bounded: a future on a connection that died may never resolve.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(ds))
	for _, d := range ds {
		m := &nats.Msg{Subject: d.Subject, Header: nats.Header{}}
		m.Header.Set("Nats-Incr", strconv.FormatInt(d.By, 10))
		f, err := js.PublishMsgAsync(m, jetstream.WithMsgID(key+"."+d.Subject))
		if err != nil {
			return fmt.Errorf("status: count %s: %w", d.Subject, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("status: count %s: %w", ds[i].Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// CampaignCounts is a campaign's progress: messages per latest status.
type CampaignCounts struct {
	Campaign string           `json:"campaign"`
	Total    int64            `json:"total"`
	Counts   map[string]int64 `json:"counts"`
	Terminal int64            `json:"terminal"`
	Progress float64          `json:"progress"`
}

// ErrNoCampaign is returned by Counts for a campaign with no messages.
var ErrNoCampaign = errors.New("status: no such campaign")

// Counts reads a campaign's counters: one direct get per status, all at once.
func Counts(ctx context.Context, counts jetstream.Stream, campaign string) (CampaignCounts, error) {
	out := CampaignCounts{Campaign: campaign, Counts: map[string]int64{}}
	read := func(s string) (int64, error) {
		raw, err := counts.GetLastMsgForSubject(ctx, CountSubject(campaign, s))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("status: counts of %s: %w", campaign, err)
		}
		var v struct {
			Val string `json:"val"`
		}
		if err := json.Unmarshal(raw.Data, &v); err != nil {
			return 0, fmt.Errorf("status: counter %s: %w", raw.Subject, err)
		}
		n, err := strconv.ParseInt(v.Val, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: counter %s: %w", raw.Subject, err)
		}
		return n, nil
	}
	// The reads go out at once: one round trip, not ten.
	names := append([]string{"total"}, Statuses...)
	vals := make([]int64, len(names))
	var g errgroup.Group
	for i, name := range names {
		g.Go(func() (err error) {
			vals[i], err = read(name)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return out, err
	}
	if vals[0] <= 0 {
		return out, ErrNoCampaign
	}
	out.Total = vals[0]
	for i, s := range Statuses {
		// A -1 can land a moment before its +1 when two instances index
		// one message at once; the sum is exact once both have landed.
		if n := vals[i+1]; n > 0 {
			out.Counts[s] = n
			if Terminal(s) {
				out.Terminal += n
			}
		}
	}
	out.Progress = float64(out.Terminal) / float64(out.Total)
	return out, nil
}
