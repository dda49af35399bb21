// Package streams embeds the JetStream definitions of smsflow and applies them.
//
// The JSON files beside this file are the single definition of every stream,
// consumer and KV bucket: stream files are in the nats CLI's own format
// (`nats stream add --config streams/SMS_OUTBOUND.json`), consumer files too
// (`nats consumer add SMS_OUTBOUND --config streams/consumers/SMS_OUTBOUND-policy.json`).
// The CLI has no file form for KV buckets, so kv/*.json hold
// jetstream.KeyValueConfig as JSON. The binary applies all of them at start
// (create or update), so the CLI and the program agree on one definition.
package streams

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

//go:embed *.json consumers/*.json kv/*.json objects/*.json
var files embed.FS

// Stream names, the contract of DESIGN.md.
const (
	Outbound = "SMS_OUTBOUND"
	Egress   = "SMS_EGRESS"
	Status   = "SMS_STATUS"
	DLR      = "SMS_DLR"
	Inbound  = "SMS_INBOUND"

	ReceiptTimers = "SMS_RECEIPT_TIMERS" // receipt timeouts, as message schedules
	Counts        = "SMS_COUNTS"

	WebhookPark = "SMS_WEBHOOK_PARK" // webhooks whose host fails or is busy, as message schedules
)

// KV bucket names.
const (
	BucketDLRIndex = "sms_dlr_index"
	BucketStatus   = "sms_status"
	BucketPacing   = "sms_pacing"
	BucketLinks    = "sms_links"

	BucketReceiptParts = "sms_receipt_parts" // final receipt of each part of a long message
)

// Blacklist buckets: runtime decisions (KV) and list files (Object Store).
const (
	BucketBlacklist       = "sms_blacklist"
	ObjectBucketBlacklist = "sms_blacklist"
	BucketWebhooks        = "sms_webhooks"
	BucketCaps            = "sms_caps"
	BucketDedup           = "sms_dedup"
	BucketOptOut          = "sms_optout"
)

// Consumer durable names.
const (
	ConsumerPolicy   = "policy"
	ConsumerReceipts = "receipts"

	ConsumerReceiptTimeouts = "receipt-timeouts" // on SMS_RECEIPT_TIMERS: the timeouts that fired
	ConsumerReceiptRechecks = "receipt-rechecks" // on SMS_RECEIPT_TIMERS: parked receipts, due again
	ConsumerStatus          = "status"
	ConsumerWebhooks        = "webhooks"
	ConsumerOptOut          = "policy-optout" // on SMS_INBOUND

	ConsumerWebhooksDue = "webhooks-due" // on SMS_WEBHOOK_PARK: parked webhooks, due again
)

// poolPlaceholder is replaced by a pool name in the egress consumer template.
const poolPlaceholder = "POOL"

// Streams returns every embedded stream definition, sorted by name.
func Streams() ([]jetstream.StreamConfig, error) {
	names, err := files.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var out []jetstream.StreamConfig
	for _, e := range names {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var c jetstream.StreamConfig
		if err := decode(e.Name(), &c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Buckets returns every embedded KV bucket definition, sorted by name.
func Buckets() ([]jetstream.KeyValueConfig, error) {
	names, err := files.ReadDir("kv")
	if err != nil {
		return nil, err
	}
	var out []jetstream.KeyValueConfig
	for _, e := range names {
		var c jetstream.KeyValueConfig
		if err := decode(path.Join("kv", e.Name()), &c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bucket < out[j].Bucket })
	return out, nil
}

// ObjectStores returns every embedded Object Store bucket definition,
// sorted by name.
func ObjectStores() ([]jetstream.ObjectStoreConfig, error) {
	names, err := files.ReadDir("objects")
	if err != nil {
		return nil, err
	}
	var out []jetstream.ObjectStoreConfig
	for _, e := range names {
		var c jetstream.ObjectStoreConfig
		if err := decode(path.Join("objects", e.Name()), &c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bucket < out[j].Bucket })
	return out, nil
}

// Consumer returns the embedded definition of a durable consumer on stream.
func Consumer(stream, durable string) (jetstream.ConsumerConfig, error) {
	var c jetstream.ConsumerConfig
	err := decode(path.Join("consumers", stream+"-"+durable+".json"), &c)
	return c, err
}

// EgressConsumerName is the durable name of a pool's egress consumer.
func EgressConsumerName(pool string) string { return "egress-" + pool }

// EgressSubject is the subject a pool's messages wait on.
func EgressSubject(pool string) string { return "sms.egress." + pool }

// PrioritySubject is the subject of a pool's priority lane: transactional
// messages (one-time passwords) wait here, and a link takes from it first
// whenever it holds a token, so they never queue behind a marketing backlog.
func PrioritySubject(pool string) string { return EgressSubject(pool) + ".priority" }

// PriorityConsumerName is the durable name of a pool's priority lane.
func PriorityConsumerName(pool string) string { return EgressConsumerName(pool) + "-priority" }

// EgressConsumer returns the consumer definition of one pool, made from the
// template consumers/SMS_EGRESS-pool.json.
func EgressConsumer(pool string) (jetstream.ConsumerConfig, error) {
	return poolConsumer(pool, Egress+"-pool.json")
}

// PriorityConsumer returns the consumer definition of a pool's priority
// lane, from consumers/SMS_EGRESS-pool-priority.json.
func PriorityConsumer(pool string) (jetstream.ConsumerConfig, error) {
	return poolConsumer(pool, Egress+"-pool-priority.json")
}

func poolConsumer(pool, template string) (jetstream.ConsumerConfig, error) {
	var c jetstream.ConsumerConfig
	if err := decode(path.Join("consumers", template), &c); err != nil {
		return c, err
	}
	c.Durable = strings.ReplaceAll(c.Durable, poolPlaceholder, pool)
	c.FilterSubject = strings.ReplaceAll(c.FilterSubject, poolPlaceholder, pool)
	return c, nil
}

func decode(name string, v any) error {
	b, err := files.ReadFile(name)
	if err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("streams: %s: %w", name, err)
	}
	return nil
}

// obsoleteConsumers are durable consumers smsflow no longer uses, as
// {stream, durable}: "receipt-timers" on SMS_STATUS armed receipt timeouts
// from the submitted events, which egress now arms itself when it records a
// submit (one consumer of every status event fewer).
var obsoleteConsumers = [][2]string{{Status, "receipt-timers"}}

// Apply creates or updates every stream, KV and Object Store bucket, and the durable
// consumers of the policy and receipts stages and of each pool. It is safe to
// call from every instance at every start.
func Apply(ctx context.Context, js jetstream.JetStream, pools []string) error {
	ss, err := Streams()
	if err != nil {
		return err
	}
	for _, c := range ss {
		if _, err := js.CreateOrUpdateStream(ctx, c); err != nil {
			return fmt.Errorf("stream %s: %w", c.Name, err)
		}
	}
	bs, err := Buckets()
	if err != nil {
		return err
	}
	for _, c := range bs {
		if _, err := js.CreateOrUpdateKeyValue(ctx, c); err != nil {
			return fmt.Errorf("kv %s: %w", c.Bucket, err)
		}
	}
	objs, err := ObjectStores()
	if err != nil {
		return err
	}
	for _, c := range objs {
		if _, err := js.CreateOrUpdateObjectStore(ctx, c); err != nil {
			return fmt.Errorf("object store %s: %w", c.Bucket, err)
		}
	}
	for _, sc := range [][2]string{{Outbound, ConsumerPolicy}, {DLR, ConsumerReceipts},
		{ReceiptTimers, ConsumerReceiptTimeouts},
		{ReceiptTimers, ConsumerReceiptRechecks}, {Status, ConsumerStatus}, {Status, ConsumerWebhooks},
		{Inbound, ConsumerOptOut},
		{WebhookPark, ConsumerWebhooksDue}} {
		c, err := Consumer(sc[0], sc[1])
		if err != nil {
			return err
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, sc[0], c); err != nil {
			return fmt.Errorf("consumer %s/%s: %w", sc[0], sc[1], err)
		}
	}
	// Consumers of earlier versions: one left behind would keep its
	// stream's messages pending for nobody.
	// Only once it has nothing left to hand out or to settle: until then
	// an instance of the version that reads it may still be running.
	for _, sc := range obsoleteConsumers {
		c, err := js.Consumer(ctx, sc[0], sc[1])
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("obsolete consumer %s/%s: %w", sc[0], sc[1], err)
		}
		if ci := c.CachedInfo(); ci.NumPending > 0 || ci.NumAckPending > 0 {
			continue
		}
		if err := js.DeleteConsumer(ctx, sc[0], sc[1]); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete obsolete consumer %s/%s: %w", sc[0], sc[1], err)
		}
	}
	for _, p := range pools {
		for _, def := range []func(string) (jetstream.ConsumerConfig, error){EgressConsumer, PriorityConsumer} {
			c, err := def(p)
			if err != nil {
				return err
			}
			if _, err := js.CreateOrUpdateConsumer(ctx, Egress, c); err != nil {
				return fmt.Errorf("consumer %s/%s: %w", Egress, c.Durable, err)
			}
		}
	}
	return nil
}

// ScheduledSubject is where a message with a future send_at waits, as a
// message schedule of SMS_OUTBOUND that the server releases to sms.outbound.
func ScheduledSubject(id string) string { return "sms.scheduled." + id }
