package egress

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// bulkFeed fetches a link's bulk lane for its workers: one pull request for
// as many messages as workers are asking for at that moment, instead of one
// pull request (and one inbox subscription) per message. A worker asks only
// when it is free to submit, so nothing is fetched ahead of the workers: a
// message waits in a worker's hands for its token, never in a buffer.
type bulkFeed struct {
	cons jetstream.Consumer
	max  int
	asks chan chan fed
}

// fed is the answer to one ask: a message, nil when the lane stayed empty
// for bulkWait, or the fetch's error.
type fed struct {
	msg jetstream.Msg
	err error
}

func newBulkFeed(cons jetstream.Consumer, most int) *bulkFeed {
	return &bulkFeed{cons: cons, max: max(most, 1), asks: make(chan chan fed)}
}

// ask asks for one message; the answer comes on the returned channel (a
// message, nil when the lane stayed empty for bulkWait, or the fetch's
// error). Once the feed has the ask it always answers, so the asker must
// read the answer even when ctx ends (it comes within bulkWait and a fetch):
// a message fetched for it is never left unread. ask returns nil when ctx
// ends before the feed took the ask.
func (f *bulkFeed) ask(ctx context.Context) <-chan fed {
	reply := make(chan fed, 1)
	select {
	case f.asks <- reply:
		return reply
	case <-ctx.Done():
		return nil
	}
}

// run answers asks until ctx ends. On a busy lane it takes what is there at
// once (no wait); on an empty one it waits up to bulkWait for one message.
func (f *bulkFeed) run(ctx context.Context) {
	waiting := make([]chan fed, 0, f.max)
	for {
		select {
		case r := <-f.asks:
			waiting = append(waiting, r)
		case <-ctx.Done():
			return
		}
	more:
		for len(waiting) < f.max {
			select {
			case r := <-f.asks:
				waiting = append(waiting, r)
			default:
				break more
			}
		}
		msgs, err := f.fetch(len(waiting))
		for i, r := range waiting {
			if i < len(msgs) {
				r <- fed{msg: msgs[i]}
			} else {
				r <- fed{err: err}
			}
		}
		waiting = waiting[:0]
	}
}

// fetch takes up to n messages that are waiting now, or, when there are
// none, waits up to bulkWait for one.
func (f *bulkFeed) fetch(n int) ([]jetstream.Msg, error) {
	return fetchLane(f.cons, n, bulkWait)
}

// fetchLane takes up to n messages that are waiting on cons now, or, when
// there are none, waits up to wait for one.
func fetchLane(cons jetstream.Consumer, n int, wait time.Duration) ([]jetstream.Msg, error) {
	if b, err := cons.FetchNoWait(n); err == nil {
		if msgs := drain(b); len(msgs) > 0 {
			return msgs, nil
		}
	}
	b, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	return drain(b), nil
}

// drain reads a fetch's messages; its error (a timeout, an empty lane) only
// says why there are not more.
func drain(b jetstream.MessageBatch) []jetstream.Msg {
	var out []jetstream.Msg
	for m := range b.Messages() {
		out = append(out, m)
	}
	return out
}
