package config

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// defaults returns a fresh copy of the embedded defaults, loaded and valid.
func defaults(t *testing.T) Config {
	t.Helper()
	c, err := Load("", environ())
	if err != nil {
		t.Fatalf("Load defaults: %v", err)
	}
	return c
}

func TestValidateNamesEveryBadKey(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(c *Config)
		want  string // the error must contain it; it starts with the full key
	}{
		{"an embedded server needs a listen address", func(c *Config) { c.NATS.Listen = "localhost" }, `nats.listen: must be host:port, got "localhost"`},
		{"an embedded server needs a data dir", func(c *Config) { c.NATS.DataDir = "" }, "nats.data_dir: must not be empty"},
		{"an external server needs a URL with a host", func(c *Config) { c.NATS.URL = "nats://" }, `nats.url: "nats://" is not a server URL`},
		{"a bad URL is named without its password", func(c *Config) { c.NATS.URL = "nats://me:s3cret@" }, `nats.url: "nats://…@" is not a server URL`},
		{"creds and user do not mix", func(c *Config) { c.NATS.URL = "nats://x:4222"; c.NATS.Creds = "a.creds"; c.NATS.User = "u" }, "nats.user: must be empty when nats.creds is set"},
		{"a password needs a user", func(c *Config) { c.NATS.Password = "p" }, "nats.password: set but nats.user is empty"},
		{"the HTTP port must be a number", func(c *Config) { c.HTTP.Listen = "127.0.0.1:http" }, "http.listen: port must be a number from 0 to 65535"},
		{"the body limit must be positive", func(c *Config) { c.HTTP.MaxBodyBytes = 0 }, "http.max_body_bytes: must be > 0, got 0"},
		{"a batch must hold a message", func(c *Config) { c.HTTP.MaxBatch = -1 }, "http.max_batch: must be > 0, got -1"},
		{"an enabled simulator needs a listen address", func(c *Config) { c.SMSCSim.Listen = "" }, "smsc_sim.listen: must be host:port"},
		{"a simulator password is at most 8 characters", func(c *Config) { c.SMSCSim.Password = "123456789" }, "smsc_sim.password: must be at most 8 characters (SMPP limit), got 9"},
		{"a simulator rate limit is not negative", func(c *Config) { c.SMSCSim.MaxPerSecond = -1 }, "smsc_sim.max_per_second: must be >= 0, got -1"},
		{"a link needs an address", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Address = "" }) }, `links.sim1.address: must be host:port, got ""`},
		{"a link address needs a host", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Address = ":2775" }) }, "links.sim1.address: must name a host"},
		{"a link address needs a real port", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Address = "h:0" }) }, "links.sim1.address: port must be a number from 1 to 65535"},
		{"a link needs a system_id", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.SystemID = "" }) }, "links.sim1.system_id: must not be empty"},
		{"a link system_id is at most 15 characters", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.SystemID = strings.Repeat("x", 16) }) }, "links.sim1.system_id: must be at most 15 characters"},
		{"a link system_type is at most 12 characters", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.SystemType = strings.Repeat("x", 13) }) }, "links.sim1.system_type: must be at most 12 characters"},
		{"a link source_addr is at most 20 characters", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.SourceAddr = strings.Repeat("x", 21) }) }, "links.sim1.source_addr: must be at most 20 characters"},
		{"a link rate must be positive", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Rate = 0 }) }, "links.sim1.rate: must be > 0, got 0"},
		{"a link burst must be positive", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Burst = -5 }) }, "links.sim1.burst: must be > 0, got -5"},
		{"a link window must be positive", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Window = -1 }) }, "links.sim1.window: must be > 0, got -1"},
		{"a link resp_timeout must be positive", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.RespTimeout = -time.Second }) }, "links.sim1.resp_timeout: must be > 0, got -1s"},
		{"a link price must not be negative", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Price = -0.01 }) }, "links.sim1.price: must be a number >= 0, got -0.01"},
		{"a link price must be a number", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.Price = math.NaN() }) }, "links.sim1.price: must be a number >= 0, got NaN"},
		{"a link name must fit a NATS subject", func(c *Config) { c.Links["cz.1"] = c.Links["sim1"] }, `links.cz.1: name "cz.1" must be letters, digits, '-' and '_' only`},
		{"a pool name must fit a NATS subject", func(c *Config) { c.Pools["a b"] = Pool{Links: []string{"x"}} }, `pools.a b: name "a b" must be letters`},
		{"a pool needs a link", func(c *Config) { c.Pools["default"] = Pool{} }, "pools.default.links: must name at least one link"},
		{"a pool link must exist", func(c *Config) { c.Pools["default"] = Pool{Links: []string{"sim1", "nope"}} }, `pools.default.links: link "nope" is not defined in [links]`},
		{"a pool lists a link once", func(c *Config) { c.Pools["default"] = Pool{Links: []string{"sim1", "sim1"}} }, `pools.default.links: link "sim1" is listed twice`},
		{"a link belongs to one pool", func(c *Config) { c.Pools["other"] = Pool{Links: []string{"sim1"}} }, `pools.other.links: link "sim1" is already in pool "default"`},
		{"a prefix is + and digits", func(c *Config) { c.Pools["default"] = Pool{Links: []string{"sim1"}, Prefixes: []string{"420"}} }, `pools.default.prefixes: "420" must be + and 1 to 15 digits`},
		{"a prefix routes to one pool", func(c *Config) {
			c.Links["x"] = c.Links["sim1"]
			c.Pools["default"] = Pool{Links: []string{"sim1"}, Prefixes: []string{"+420"}}
			c.Pools["other"] = Pool{Links: []string{"x"}, Prefixes: []string{"+420"}}
		}, `pools.other.prefixes: "+420" is already routed to pool "default"`},
		{"the default pool must exist", func(c *Config) { c.Policy.DefaultPool = "cz" }, `policy.default_pool: pool "cz" is not defined in [pools]`},
		{"the default region is a two-letter code", func(c *Config) { c.Policy.DefaultRegion = "cz" }, `policy.default_region: must be "" or a two-letter upper-case region like "CZ", got "cz"`},
		{"a text may have a character", func(c *Config) { c.Policy.MaxTextChars = 0 }, "policy.max_text_chars: must be > 0, got 0"},
		{"a weekly cap is not below the daily cap", func(c *Config) { c.Policy.DailyCap = 5; c.Policy.WeeklyCap = 3 }, "policy.weekly_cap: must be >= policy.daily_cap (5) or 0, got 3"},
		{"the time zone is an IANA zone", func(c *Config) { c.Policy.TimeZone = "Mars/Olympus" }, `policy.time_zone: must be an IANA time zone like "Europe/Prague" or "UTC", got "Mars/Olympus"`},
		{"the time zone is not the machine's", func(c *Config) { c.Policy.TimeZone = "Local" }, `policy.time_zone: must be an IANA time zone`},
		{"the duplicate window is not negative", func(c *Config) { c.Policy.DuplicateWindow = -time.Minute }, "policy.duplicate_window: must be >= 0s, got -1m0s"},
		{"the duplicate window is at least a second", func(c *Config) { c.Policy.DuplicateWindow = time.Millisecond }, "policy.duplicate_window: must be 0 (off) or at least 1s"},
		{"a stop keyword is a word", func(c *Config) { c.Policy.StopKeywords = []string{"KONEC", " "} }, `policy.stop_keywords: " " must be a word of 1 to 64 bytes`},
		{"a message gets at least one attempt", func(c *Config) { c.Egress.MaxAttempts = 0 }, "egress.max_attempts: must be > 0, got 0"},
		{"the first backoff is positive", func(c *Config) { c.Egress.BackoffMin = 0 }, "egress.backoff_min: must be > 0, got 0s"},
		{"the backoff does not shrink", func(c *Config) { c.Egress.BackoffMax = -time.Second }, "egress.backoff_max: must be >= egress.backoff_min (500ms), got -1s"},
		{"the shutdown grace is not negative", func(c *Config) { c.Egress.ShutdownGrace = -1 }, "egress.shutdown_grace: must be >= 0s, got -1ns"},
		{"orphans are given some time", func(c *Config) { c.Receipts.OrphanAfter = 0 }, "receipts.orphan_after: must be > 0, got 0s"},
		{"a receipt timeout is positive", func(c *Config) { c.Receipts.ReceiptTimeout = 0 }, "receipts.receipt_timeout: must be > 0, got 0s"},
		{"a receipt timeout fires before its timer ages out", func(c *Config) { c.Receipts.ReceiptTimeout = 7 * 24 * time.Hour },
			"receipts.receipt_timeout: with receipts.orphan_after must be at most 72h0m0s (sms_dlr_index keeps receipts' message ids that long), got 168h0m0s + 10m0s"},
		{"an id form is a known one", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.RespIDForm = "octal" }) },
			`links.sim1.resp_id_form: must be one of text, decimal, hex; got "octal"`},
		{"a numeric id form on one side needs one on the other", func(c *Config) { setLink(c, "sim1", func(l *Link) { l.ReceiptIDForm = "decimal" }) },
			`links.sim1.receipt_id_form: must be decimal or hex when resp_id_form is, and text when it is text (got "" and "decimal")`},
		{"a webhook default URL is a URL", func(c *Config) { c.Webhooks.DefaultURL, c.Webhooks.Secret = "example.com/hook", "k" }, "webhooks.default_url: must be \"\" or an absolute http or https URL"},
		{"a webhook default URL needs a secret", func(c *Config) {
			if c.Webhooks.DefaultURL == "" {
				c.Webhooks.DefaultURL = "https://example.com/hook"
			}
			c.Webhooks.Secret = ""
		}, "webhooks.secret: must be set when webhooks.default_url is set"},
		{"webhooks have a receiver to try", func(c *Config) { c.Webhooks.PerHostConcurrency = 0 }, "webhooks.per_host_concurrency: must be > 0, got 0"},
		{"webhooks give up before the statuses age out", func(c *Config) { c.Webhooks.MaxAge = 8 * 24 * time.Hour }, "webhooks.max_age: must be at most 168h (SMS_STATUS keeps 7 days), got 192h0m0s"},
		{"webhook backoff grows", func(c *Config) { c.Webhooks.BackoffMax = time.Millisecond }, "webhooks.backoff_max: must be >= webhooks.backoff_min"},
		{"the log level is a known one", func(c *Config) { c.Log.Level = "verbose" }, `log.level: must be one of debug, info, warn, error; got "verbose"`},
		{"the log format is a known one", func(c *Config) { c.Log.Format = "xml" }, `log.format: must be one of text, json; got "xml"`},
		{"blacklist files are checked now and then", func(c *Config) { c.Blacklist.PollInterval = 0 }, "blacklist.poll_interval: must be > 0, got 0s"},
		{"a blacklist file has a path", func(c *Config) { c.Blacklist.Files = []string{"a.txt", " "} }, "blacklist.files: entry 2 is empty"},
		{"the blacklist object bucket is a bucket name", func(c *Config) { c.Blacklist.ObjectBucket = "a.b" }, `blacklist.object_bucket: name "a.b" must be letters`},
	}

	// Each rule alone.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults(t)
			tt.spoil(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v\nwant an error containing %q", err, tt.want)
			}
		})
	}

	// Every rule at once: Validate reports them all, not the first. The nats
	// cases contradict each other (nats.url set or not) and the pool cases
	// overwrite the same pool, so pools get a case of their own below.
	t.Run("every bad key is reported at once", func(t *testing.T) {
		c := defaults(t)
		var want []string
		for _, tt := range tests {
			if strings.HasPrefix(tt.want, "nats.") || strings.HasPrefix(tt.want, "pools.") {
				continue
			}
			tt.spoil(&c)
			want = append(want, strings.SplitN(tt.want, ":", 2)[0]+":")
		}
		c.Links["x"] = c.Links["sim1"]
		c.Pools = map[string]Pool{
			"a.b":     {Links: []string{"nope"}},
			"default": {Links: []string{"sim1", "sim1"}, Prefixes: []string{"420", "+420", "+420"}},
			"empty":   {},
			"other":   {Links: []string{"sim1", "x"}, Prefixes: []string{"+420"}},
		}
		want = append(want,
			`pools.a.b: name "a.b"`,
			`pools.a.b.links: link "nope" is not defined`,
			`pools.default.links: link "sim1" is listed twice`,
			`pools.default.prefixes: "420" must be +`,
			`pools.default.prefixes: "+420" is listed twice`,
			"pools.empty.links: must name at least one link",
			`pools.other.links: link "sim1" is already in pool "default"`,
			`pools.other.prefixes: "+420" is already routed to pool "default"`,
		)
		err := c.Validate()
		if err == nil {
			t.Fatal("Validate() = nil, want errors")
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("the joined error does not name %q:\n%v", w, err)
			}
		}
	})
}

func setLink(c *Config, name string, f func(l *Link)) {
	l := c.Links[name]
	f(&l)
	c.Links[name] = l
}

func TestValidateAcceptsWhatTheDefaultsLeaveOptional(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
	}{
		{"an external server needs no listen address or data dir", func(c *Config) {
			c.NATS = NATS{URL: "nats://a:4222, b:4222", User: "u", Password: "p"}
		}},
		{"a disabled simulator needs no settings", func(c *Config) { c.SMSCSim = SMSCSim{} }},
		{"listen addresses may use any interface and any free port", func(c *Config) {
			c.HTTP.Listen, c.NATS.Listen, c.SMSCSim.Listen = ":0", "[::1]:0", ":2775"
		}},
		{"no default pool rejects unrouted numbers", func(c *Config) { c.Policy.DefaultPool = "" }},
		{"a default region may be set", func(c *Config) { c.Policy.DefaultRegion = "CZ" }},
		{"the same prefix length in two pools is fine when the prefixes differ", func(c *Config) {
			c.Links["x"] = c.Links["sim1"]
			c.Pools["default"] = Pool{Links: []string{"sim1"}, Prefixes: []string{"+420"}}
			c.Pools["sk"] = Pool{Links: []string{"x"}, Prefixes: []string{"+421", "+4219"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults(t)
			tt.change(&c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestValidateOfTheZeroConfigFailsWithoutPanicking(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Error("Validate() of the zero Config = nil, want errors")
	}
}

func TestAPoolNameEndingInPriorityIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	body := "[links.a]\naddress = \"127.0.0.1:2775\"\nsystem_id = \"s\"\npassword = \"p\"\nrate = 10\n" +
		"[pools.bulk-priority]\nlinks = [\"a\"]\n[policy]\ndefault_pool = \"bulk-priority\"\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, func() []string { return nil })
	if err == nil || !strings.Contains(err.Error(), "pools.bulk-priority") {
		t.Fatalf("err = %v, want one naming pools.bulk-priority", err)
	}
}

func TestValidateTheSMPPLinkKeys(t *testing.T) {
	bad := []struct {
		name  string
		spoil func(l *Link)
		want  string
	}{
		{"sessions are not negative", func(l *Link) { l.Sessions = -1 }, "links.sim1.sessions: must be >= 0, got -1"},
		{"bind_mode is trx or tx_rx", func(l *Link) { l.BindMode = "rx" }, `links.sim1.bind_mode: must be one of , trx, tx_rx; got "rx"`},
		{"split is udh or sar", func(l *Link) { l.Split = "payload" }, `links.sim1.split: must be one of , udh, sar; got "payload"`},
		{"enquire_link is at least go-smpp's 10s", func(l *Link) { l.EnquireLink = time.Second }, "links.sim1.enquire_link: must be >= 10s, got 1s"},
		{"tls_ca needs tls", func(l *Link) { l.TLSCA = "ca.pem" }, "links.sim1: tls_ca and tls_insecure_skip_verify need tls = true"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			c := defaults(t)
			setLink(&c, "sim1", b.spoil)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, b.want)
			}
		})
	}
	c := defaults(t)
	setLink(&c, "sim1", func(l *Link) {
		l.Sessions, l.BindMode, l.Split, l.EnquireLink, l.TLS, l.TLSCA = 3, "tx_rx", "sar", 30*time.Second, true, "ca.pem"
	})
	if err := c.Validate(); err != nil {
		t.Fatalf("a full SMPP setting: %v", err)
	}
}
