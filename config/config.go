// Package config loads smsflow's configuration: the embedded smsflow.toml
// defaults, then a TOML file, then SMSFLOW_* environment variables, into typed
// structs that are validated key by key.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/toml"
	env "github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
)

//go:embed smsflow.toml
var defaultTOML []byte

// Config is the whole configuration. Field tags are the TOML keys; the
// environment uses the same keys (see Load).
type Config struct {
	NATS      NATS            `koanf:"nats"`
	HTTP      HTTP            `koanf:"http"`
	SMSCSim   SMSCSim         `koanf:"smsc_sim"`
	Links     map[string]Link `koanf:"links"`
	Pools     map[string]Pool `koanf:"pools"`
	Policy    Policy          `koanf:"policy"`
	Egress    Egress          `koanf:"egress"`
	Receipts  Receipts        `koanf:"receipts"`
	Log       Log             `koanf:"log"`
	Blacklist Blacklist       `koanf:"blacklist"`
	Webhooks  Webhooks        `koanf:"webhooks"`
}

// NATS says where the broker is: an embedded server (URL empty) listening on
// Listen and storing JetStream in DataDir, or an external one at URL.
type NATS struct {
	URL      string `koanf:"url"`
	Listen   string `koanf:"listen"`
	DataDir  string `koanf:"data_dir"`
	Creds    string `koanf:"creds"`
	User     string `koanf:"user"`
	Password Secret `koanf:"password"`
}

// HTTP configures the API server.
type HTTP struct {
	Listen       string `koanf:"listen"`
	MaxBodyBytes int64  `koanf:"max_body_bytes"`
	MaxBatch     int    `koanf:"max_batch"`
}

// SMSCSim configures the built-in SMSC simulator.
type SMSCSim struct {
	Enabled      bool          `koanf:"enabled"`
	Listen       string        `koanf:"listen"`
	SystemID     string        `koanf:"system_id"`
	Password     Secret        `koanf:"password"`
	ReceiptDelay time.Duration `koanf:"receipt_delay"`
	MaxPerSecond int           `koanf:"max_per_second"` // 0: no limit
}

// Link is one SMPP bind to an SMSC. Load fills Burst (from Rate), Window and
// RespTimeout when they are left out.
type Link struct {
	Address     string        `koanf:"address"`
	SystemID    string        `koanf:"system_id"`
	Password    Secret        `koanf:"password"`
	SystemType  string        `koanf:"system_type"`
	Rate        int           `koanf:"rate"`   // sustained submits per second
	Burst       int           `koanf:"burst"`  // token-bucket size
	Window      int           `koanf:"window"` // submits in flight
	RespTimeout time.Duration `koanf:"resp_timeout"`
	SourceAddr  string        `koanf:"source_addr"`
	Price       float64       `koanf:"price"` // cost of one submitted part, for the dashboard; 0: not priced
	// How the SMSC writes message ids in submit_sm_resp and in receipts:
	// "text" (default, ""), "decimal" or "hex" (see dlr.CanonicalID).
	RespIDForm    string `koanf:"resp_id_form"`
	ReceiptIDForm string `koanf:"receipt_id_form"`
	// SMPP depth (issue 5): several binds, the bind type, TLS, long messages.
	Sessions              int           `koanf:"sessions"`     // binds kept, each with its own window; 0: 1
	BindMode              string        `koanf:"bind_mode"`    // "trx" (transceiver, also when "") or "tx_rx" (transmitter + receiver)
	EnquireLink           time.Duration `koanf:"enquire_link"` // 0: 10s
	TLS                   bool          `koanf:"tls"`
	TLSCA                 string        `koanf:"tls_ca"` // PEM file of the CA to trust; "": the system roots
	TLSInsecureSkipVerify bool          `koanf:"tls_insecure_skip_verify"`
	Split                 string        `koanf:"split"` // "udh" (also when "") or "sar": how long-message parts are tied
}

// Pool is a group of links that messages are routed to.
type Pool struct {
	Links    []string `koanf:"links"`
	Prefixes []string `koanf:"prefixes"` // E.164 prefixes routed to this pool, e.g. "+420"
}

// Policy configures the policy stage.
type Policy struct {
	DefaultPool   string `koanf:"default_pool"`   // "": unmatched numbers are rejected (no_route)
	DefaultRegion string `koanf:"default_region"` // "": numbers must be in +E.164 form
	MaxTextChars  int    `koanf:"max_text_chars"`

	// Frequency caps (CP1), duplicate window (CP2) and opt-out keywords.
	DailyCap         int           `koanf:"daily_cap"`         // per recipient per calendar day; 0: no cap
	WeeklyCap        int           `koanf:"weekly_cap"`        // per recipient per ISO week; 0: no cap
	CapTransactional bool          `koanf:"cap_transactional"` // transactional messages count against the caps too
	TimeZone         string        `koanf:"time_zone"`         // IANA zone of the caps' days and weeks
	DuplicateWindow  time.Duration `koanf:"duplicate_window"`  // same text to the same number within it: duplicate; 0: off
	StopKeywords     []string      `koanf:"stop_keywords"`     // besides STOP and UNSUBSCRIBE
	StartKeywords    []string      `koanf:"start_keywords"`    // besides START
}

// Egress configures submitting and retrying.
type Egress struct {
	MaxAttempts   int           `koanf:"max_attempts"`
	BackoffMin    time.Duration `koanf:"backoff_min"`
	BackoffMax    time.Duration `koanf:"backoff_max"`
	ShutdownGrace time.Duration `koanf:"shutdown_grace"`
}

// Receipts configures the receipts stage.
type Receipts struct {
	OrphanAfter    time.Duration `koanf:"orphan_after"`
	ReceiptTimeout time.Duration `koanf:"receipt_timeout"` // submitted with no final receipt this long: expired (no_receipt)
}

// Blacklist configures the blacklist (pkg/blacklist): list files, an Object
// Store bucket of lists, and runtime decisions in KV bucket sms_blacklist.
// Numbers in lists without a + are read in policy.default_region.
type Blacklist struct {
	Files        []string      `koanf:"files"`         // list files, re-read when they change
	ObjectBucket string        `koanf:"object_bucket"` // "": no Object Store lists
	PollInterval time.Duration `koanf:"poll_interval"` // how often files are checked
}

// Log configures the logger.
type Log struct {
	Level  string `koanf:"level"`  // debug, info, warn or error
	Format string `koanf:"format"` // text or json
}

// Link defaults filled in by applyDefaults, so a file or the environment can
// define a new link with only address, system_id, password and rate.
const (
	defaultWindow      = 10
	defaultRespTimeout = 5 * time.Second
)

const envPrefix = "SMSFLOW_"

// Load reads the embedded defaults, then the TOML file at path (if path is not
// ""), then environment variables from environ (os.Environ if nil), and
// returns the validated result.
//
// An environment variable SMSFLOW_A__B__C sets key a.b.c: the prefix is
// dropped, the rest lower-cased, and "__" separates levels
// (SMSFLOW_NATS__DATA_DIR sets nats.data_dir). Lists are comma-separated.
//
// If the file has a "links" table, the default links and pools are dropped;
// if it has only a "pools" table, the default pools are. The environment
// never drops defaults: it adds or overrides keys.
//
// The error lists every problem at once (errors.Join), each naming its full
// key: unknown keys and ill-typed values per source, else every failed
// validation rule.
func Load(path string, environ func() []string) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(defaultTOML), toml.Parser()); err != nil {
		return Config{}, fmt.Errorf("config: embedded defaults: %w", err)
	}
	errs := checkKeys(k.Raw(), func(string) string { return " (in the embedded defaults)" })

	if path != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(path), toml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", path, err)
		}
		raw := fk.Raw()
		errs = append(errs, checkKeys(raw, func(string) string { return " (in " + path + ")" })...)
		if _, ok := raw["links"]; ok {
			k.Delete("links")
			k.Delete("pools")
		} else if _, ok := raw["pools"]; ok {
			k.Delete("pools")
		}
		if err := k.Merge(fk); err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", path, err)
		}
	}

	if environ == nil {
		environ = os.Environ
	}
	origin := map[string]string{} // key -> the variable that set it
	ek := koanf.New(".")
	err := ek.Load(env.Provider(".", env.Opt{
		Prefix:      envPrefix,
		EnvironFunc: environ,
		TransformFunc: func(name, value string) (string, any) {
			key := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, envPrefix)), "__", ".")
			origin[key] = name
			return key, value
		},
	}), nil)
	if err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}
	errs = append(errs, checkKeys(ek.Raw(), func(key string) string { return envSource(origin, key) })...)
	if err := k.Merge(ek); err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}

	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}

	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: decoderConfig()}); err != nil {
		// checkKeys has checked every key and value, so this is a bug here.
		return Config{}, fmt.Errorf("config: decode: %w", err)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// envSource names the variables that set key or anything under it.
func envSource(origin map[string]string, key string) string {
	var names []string
	for k, name := range origin {
		if k == key || strings.HasPrefix(k, key+".") {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return " (from the environment)"
	}
	slices.Sort(names)
	return " (from " + strings.Join(names, ", ") + ")"
}

// applyDefaults fills link keys that a new link may leave out.
func (c *Config) applyDefaults() {
	for name, l := range c.Links {
		if l.Burst == 0 {
			l.Burst = l.Rate
		}
		if l.Window == 0 {
			l.Window = defaultWindow
		}
		if l.RespTimeout == 0 {
			l.RespTimeout = defaultRespTimeout
		}
		c.Links[name] = l
	}
}
