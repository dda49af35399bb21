package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SMPP 3.4 field limits (C-Octet String sizes less the terminating NUL).
const (
	maxSystemID   = 15
	maxPassword   = 8
	maxSystemType = 12
	maxSourceAddr = 20
)

// Validate checks the config after defaults are applied and returns every
// problem at once (errors.Join), each starting with its full key, as in
// "links.cz1.rate: must be > 0, got 0". The order is stable.
func (c Config) Validate() error {
	v := &validator{}
	c.validateNATS(v)
	v.hostPort("http.listen", c.HTTP.Listen, true)
	v.atLeast("http.max_body_bytes", c.HTTP.MaxBodyBytes, 1)
	v.atLeast("http.max_batch", int64(c.HTTP.MaxBatch), 1)
	if c.SMSCSim.Enabled {
		v.hostPort("smsc_sim.listen", c.SMSCSim.Listen, true)
		v.text("smsc_sim.system_id", c.SMSCSim.SystemID, true, maxSystemID)
		v.text("smsc_sim.password", c.SMSCSim.Password.Reveal(), false, maxPassword)
		v.atLeastDuration("smsc_sim.receipt_delay", c.SMSCSim.ReceiptDelay, 0)
		v.atLeast("smsc_sim.max_per_second", int64(c.SMSCSim.MaxPerSecond), 0)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Links)) {
		c.validateLink(v, name, c.Links[name])
	}
	c.validatePools(v)
	c.validatePolicy(v)
	v.atLeast("egress.max_attempts", int64(c.Egress.MaxAttempts), 1)
	v.positive("egress.backoff_min", c.Egress.BackoffMin)
	if c.Egress.BackoffMax < c.Egress.BackoffMin {
		v.addf("egress.backoff_max: must be >= egress.backoff_min (%s), got %s", c.Egress.BackoffMin, c.Egress.BackoffMax)
	}
	v.atLeastDuration("egress.shutdown_grace", c.Egress.ShutdownGrace, 0)
	v.positive("receipts.orphan_after", c.Receipts.OrphanAfter)
	c.validateReceiptTimeout(v)
	c.validateBlacklist(v)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	c.validateWebhooks(v)
	return errors.Join(v.errs...)
}

func (c Config) validateNATS(v *validator) {
	n := c.NATS
	if n.URL == "" {
		v.hostPort("nats.listen", n.Listen, true)
		if n.DataDir == "" {
			v.addf("nats.data_dir: must not be empty when nats.url is empty (the embedded server needs a store)")
		}
	} else {
		for part := range strings.SplitSeq(n.URL, ",") {
			part = strings.TrimSpace(part)
			u, err := url.Parse(part)
			if !strings.Contains(part, "://") {
				u, err = url.Parse("nats://" + part)
			}
			if err != nil || u.Host == "" {
				v.addf("nats.url: %q is not a server URL like nats://host:4222", shorten(withoutUserinfo(part)))
			}
		}
	}
	if n.Creds != "" && n.User != "" {
		v.addf("nats.user: must be empty when nats.creds is set (use one way to authenticate)")
	}
	if n.Password != "" && n.User == "" {
		v.addf("nats.password: set but nats.user is empty")
	}
}

func (c Config) validateLink(v *validator, name string, l Link) {
	key := "links." + name
	v.name(key, name)
	v.hostPort(key+".address", l.Address, false)
	v.text(key+".system_id", l.SystemID, true, maxSystemID)
	v.text(key+".password", l.Password.Reveal(), false, maxPassword)
	v.text(key+".system_type", l.SystemType, false, maxSystemType)
	v.text(key+".source_addr", l.SourceAddr, false, maxSourceAddr)
	v.atLeast(key+".rate", int64(l.Rate), 1)
	v.atLeast(key+".burst", int64(l.Burst), 1)
	v.atLeast(key+".window", int64(l.Window), 1)
	v.positive(key+".resp_timeout", l.RespTimeout)
	if !(l.Price >= 0) || math.IsInf(l.Price, 1) {
		v.addf("%s.price: must be a number >= 0, got %v", key, l.Price)
	}
	validateIDForms(v, key, l)
	v.atLeast(key+".sessions", int64(l.Sessions), 0)
	v.oneOf(key+".bind_mode", l.BindMode, "", "trx", "tx_rx")
	v.oneOf(key+".split", l.Split, "", "udh", "sar")
	if l.EnquireLink != 0 {
		v.atLeastDuration(key+".enquire_link", l.EnquireLink, 10*time.Second) // go-smpp's minimum
	}
	if !l.TLS && (l.TLSCA != "" || l.TLSInsecureSkipVerify) {
		v.addf("%s: tls_ca and tls_insecure_skip_verify need tls = true", key)
	}
}

// validateIDForms checks a link's SMSC id forms: each text, decimal or hex,
// and both numeric or both text, since a number never matches a text id.
func validateIDForms(v *validator, key string, l Link) {
	numeric := func(f string) bool { return f == "decimal" || f == "hex" }
	for _, f := range [][2]string{{".resp_id_form", l.RespIDForm}, {".receipt_id_form", l.ReceiptIDForm}} {
		if f[1] != "" {
			v.oneOf(key+f[0], f[1], "text", "decimal", "hex")
		}
	}
	if numeric(l.RespIDForm) != numeric(l.ReceiptIDForm) {
		v.addf("%s.receipt_id_form: must be decimal or hex when resp_id_form is, and text when it is text (got %q and %q)",
			key, l.RespIDForm, l.ReceiptIDForm)
	}
}

// receiptIndexTTL is the TTL of KV sms_dlr_index (streams/kv): a receipt
// must find its message there, so the receipt timeout and the orphan wait
// together stay inside it (and inside SMS_RECEIPT_TIMERS's 7 days).
const receiptIndexTTL = 72 * time.Hour

func (c Config) validateReceiptTimeout(v *validator) {
	v.positive("receipts.receipt_timeout", c.Receipts.ReceiptTimeout)
	if sum := c.Receipts.ReceiptTimeout + c.Receipts.OrphanAfter; sum > receiptIndexTTL {
		v.addf("receipts.receipt_timeout: with receipts.orphan_after must be at most %s (sms_dlr_index keeps receipts' message ids that long), got %s + %s",
			receiptIndexTTL, c.Receipts.ReceiptTimeout, c.Receipts.OrphanAfter)
	}
}

func (c Config) validatePools(v *validator) {
	linkPool := map[string]string{}   // link -> the first pool that has it
	prefixPool := map[string]string{} // prefix -> the first pool that routes it
	for _, name := range slices.Sorted(maps.Keys(c.Pools)) {
		p := c.Pools[name]
		key := "pools." + name
		v.name(key, name)
		if strings.HasSuffix(name, "-priority") {
			// A pool's priority lane is the consumer egress-<pool>-priority:
			// a pool named x-priority would share it with pool x.
			v.addf("%s: a pool name must not end in -priority (reserved for priority lanes)", key)
		}
		if len(p.Links) == 0 {
			v.addf("%s.links: must name at least one link", key)
		}
		seen := map[string]bool{}
		for _, link := range p.Links {
			switch _, ok := c.Links[link]; {
			case !ok:
				v.addf("%s.links: link %q is not defined in [links]", key, shorten(link))
			case seen[link]:
				v.addf("%s.links: link %q is listed twice", key, link)
			case linkPool[link] != "":
				v.addf("%s.links: link %q is already in pool %q (a link belongs to one pool)", key, link, linkPool[link])
			default:
				linkPool[link] = name
			}
			seen[link] = true
		}
		for _, prefix := range p.Prefixes {
			switch {
			case !validPrefix(prefix):
				v.addf("%s.prefixes: %q must be + and 1 to 15 digits, like \"+420\"", key, shorten(prefix))
			case prefixPool[prefix] == name:
				v.addf("%s.prefixes: %q is listed twice", key, prefix)
			case prefixPool[prefix] != "":
				v.addf("%s.prefixes: %q is already routed to pool %q", key, prefix, prefixPool[prefix])
			default:
				prefixPool[prefix] = name
			}
		}
	}
}

func (c Config) validatePolicy(v *validator) {
	p := c.Policy
	if _, ok := c.Pools[p.DefaultPool]; p.DefaultPool != "" && !ok {
		v.addf("policy.default_pool: pool %q is not defined in [pools] (set it to \"\" to reject unrouted numbers)", shorten(p.DefaultPool))
	}
	if p.DefaultRegion != "" && !validRegion(p.DefaultRegion) {
		v.addf("policy.default_region: must be \"\" or a two-letter upper-case region like \"CZ\", got %q", shorten(p.DefaultRegion))
	}
	v.atLeast("policy.max_text_chars", int64(p.MaxTextChars), 1)
	c.validateRules(v)
}

// validateRules checks the caps, the duplicate window and the keywords.
func (c Config) validateRules(v *validator) {
	p := c.Policy
	v.atLeast("policy.daily_cap", int64(p.DailyCap), 0)
	v.atLeast("policy.weekly_cap", int64(p.WeeklyCap), 0)
	if p.DailyCap > 0 && p.WeeklyCap > 0 && p.WeeklyCap < p.DailyCap {
		v.addf("policy.weekly_cap: must be >= policy.daily_cap (%d) or 0, got %d", p.DailyCap, p.WeeklyCap)
	}
	if _, err := time.LoadLocation(p.TimeZone); err != nil || p.TimeZone == "" || strings.EqualFold(p.TimeZone, "local") {
		v.addf("policy.time_zone: must be an IANA time zone like \"Europe/Prague\" or \"UTC\", got %q", shorten(p.TimeZone))
	}
	v.atLeastDuration("policy.duplicate_window", p.DuplicateWindow, 0)
	if p.DuplicateWindow > 0 && p.DuplicateWindow < time.Second {
		v.addf("policy.duplicate_window: must be 0 (off) or at least 1s (a KV key TTL), got %s", p.DuplicateWindow)
	}
	for _, k := range []struct {
		key   string
		words []string
	}{{"policy.stop_keywords", p.StopKeywords}, {"policy.start_keywords", p.StartKeywords}} {
		for _, w := range k.words {
			if strings.TrimSpace(w) == "" || len(w) > 64 {
				v.addf("%s: %q must be a word of 1 to 64 bytes", k.key, shorten(w))
			}
		}
	}
}

func (c Config) validateBlacklist(v *validator) {
	b := c.Blacklist
	for i, f := range b.Files {
		if strings.TrimSpace(f) == "" {
			v.addf("blacklist.files: entry %d is empty", i+1)
		}
	}
	if b.ObjectBucket != "" {
		v.name("blacklist.object_bucket", b.ObjectBucket)
	}
	v.positive("blacklist.poll_interval", b.PollInterval)
}

// validator collects errors; each helper takes the full key it reports.
type validator struct{ errs []error }

func (v *validator) addf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validator) atLeast(key string, got, low int64) {
	switch low {
	case 0:
		if got < 0 {
			v.addf("%s: must be >= 0, got %d", key, got)
		}
	case 1:
		if got < 1 {
			v.addf("%s: must be > 0, got %d", key, got)
		}
	default:
		if got < low {
			v.addf("%s: must be >= %d, got %d", key, low, got)
		}
	}
}

func (v *validator) positive(key string, got time.Duration) {
	if got <= 0 {
		v.addf("%s: must be > 0, got %s", key, got)
	}
}

func (v *validator) atLeastDuration(key string, got, low time.Duration) {
	if got < low {
		v.addf("%s: must be >= %s, got %s", key, low, got)
	}
}

func (v *validator) oneOf(key, got string, set ...string) {
	if !slices.Contains(set, got) {
		v.addf("%s: must be one of %s; got %q", key, strings.Join(set, ", "), shorten(got))
	}
}

// text checks that a string is set (if required) and within an SMPP length
// limit, counted in bytes as SMPP counts octets. The value is not echoed: it
// may be a password.
func (v *validator) text(key, got string, required bool, limit int) {
	switch {
	case required && got == "":
		v.addf("%s: must not be empty", key)
	case len(got) > limit:
		v.addf("%s: must be at most %d characters (SMPP limit), got %d", key, limit, len(got))
	}
}

// hostPort checks a host:port. A listen address may leave the host out
// (":8080", all interfaces) and use port 0 (any free port); a dial address
// may not.
func (v *validator) hostPort(key, addr string, listen bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf("%s: must be host:port, got %q", key, shorten(addr))
		return
	}
	n, err := strconv.Atoi(port)
	low := 1
	if listen {
		low = 0
	}
	if err != nil || n < low || n > 65535 {
		v.addf("%s: port must be a number from %d to 65535, got %q", key, low, shorten(port))
	}
	if !listen && host == "" {
		v.addf("%s: must name a host, got %q", key, shorten(addr))
	}
}

// name checks a link or pool name: it becomes a NATS subject token and a KV
// key, so only letters, digits, '-' and '_'.
func (v *validator) name(key, name string) {
	if !validName(name) {
		v.addf("%s: name %q must be letters, digits, '-' and '_' only", key, shorten(name))
	}
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func validPrefix(s string) bool {
	digits, ok := strings.CutPrefix(s, "+")
	if !ok || len(digits) < 1 || len(digits) > 15 {
		return false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func validRegion(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// withoutUserinfo hides what comes before an '@' in a URL's authority: an
// error message must not echo a password written into nats.url.
func withoutUserinfo(u string) string {
	rest, scheme := u, ""
	if i := strings.Index(u, "://"); i >= 0 {
		scheme, rest = u[:i+3], u[i+3:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return scheme + "…@" + rest[i+1:]
	}
	return u
}
