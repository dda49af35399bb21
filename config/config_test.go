package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeFile writes a TOML file into a temporary directory and returns its path.
func writeFile(t testing.TB, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "smsflow.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func environ(vars ...string) func() []string {
	return func() []string { return vars }
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		file  string // TOML; "" loads no file
		env   []string
		check func(t *testing.T, c Config)
	}{
		{
			name: "defaults load and validate",
			check: func(t *testing.T, c Config) {
				want := Config{
					NATS:    NATS{Listen: "127.0.0.1:4222", DataDir: "data"},
					HTTP:    HTTP{Listen: "127.0.0.1:8080", MaxBodyBytes: 8 << 20, MaxBatch: 10000},
					SMSCSim: SMSCSim{Enabled: true, Listen: "127.0.0.1:2775", SystemID: "smsflow", Password: "secret", ReceiptDelay: 200 * time.Millisecond},
					Links: map[string]Link{"sim1": {
						Address: "127.0.0.1:2775", SystemID: "smsflow", Password: "secret",
						Rate: 200, Burst: 200, Window: 10, RespTimeout: 5 * time.Second, SourceAddr: "smsflow",
					}},
					Pools:    map[string]Pool{"default": {Links: []string{"sim1"}, Prefixes: []string{}}},
					Policy:   Policy{DefaultPool: "default", MaxTextChars: 1600},
					Egress:   Egress{MaxAttempts: 10, BackoffMin: 500 * time.Millisecond, BackoffMax: time.Minute, ShutdownGrace: 10 * time.Second},
					Receipts: Receipts{OrphanAfter: 10 * time.Minute, ReceiptTimeout: 48 * time.Hour},
					Log:      Log{Level: "info", Format: "text"},
					Webhooks: Webhooks{MaxAge: 24 * time.Hour, PerHostConcurrency: 4, Timeout: 10 * time.Second, BackoffMin: time.Second, BackoffMax: 5 * time.Minute},
				}
				want.Blacklist = Blacklist{Files: []string{}, ObjectBucket: "sms_blacklist", PollInterval: 2 * time.Second}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got  %#v\nwant %#v", c.Redacted(), want.Redacted())
				}
			},
		},
		{
			name: "a link price comes from the environment as a decimal",
			env:  []string{"SMSFLOW_LINKS__SIM1__PRICE=0.035"},
			check: func(t *testing.T, c Config) {
				if got := c.Links["sim1"].Price; got != 0.035 {
					t.Errorf("links.sim1.price = %v, want 0.035", got)
				}
			},
		},
		{
			name: "a file overrides the defaults it names and keeps the rest",
			file: "[http]\nlisten = \":9090\"\n[egress]\nbackoff_min = \"1s\"\n",
			check: func(t *testing.T, c Config) {
				if c.HTTP.Listen != ":9090" || c.Egress.BackoffMin != time.Second {
					t.Errorf("http.listen = %q, egress.backoff_min = %s; want :9090, 1s", c.HTTP.Listen, c.Egress.BackoffMin)
				}
				if c.HTTP.MaxBatch != 10000 || c.Egress.BackoffMax != time.Minute {
					t.Errorf("http.max_batch = %d, egress.backoff_max = %s; want the defaults", c.HTTP.MaxBatch, c.Egress.BackoffMax)
				}
			},
		},
		{
			name: "the environment overrides the file",
			file: "[nats]\ndata_dir = \"/from/file\"\n[log]\nlevel = \"warn\"\n",
			env:  []string{"SMSFLOW_NATS__DATA_DIR=/from/env", "SMSFLOW_LINKS__SIM1__RATE=50", "SMSFLOW_SMSC_SIM__RECEIPT_DELAY=1s", "OTHER_VAR=x"},
			check: func(t *testing.T, c Config) {
				if c.NATS.DataDir != "/from/env" {
					t.Errorf("nats.data_dir = %q, want /from/env", c.NATS.DataDir)
				}
				if c.Log.Level != "warn" {
					t.Errorf("log.level = %q, want warn from the file", c.Log.Level)
				}
				if l := c.Links["sim1"]; l.Rate != 50 || l.Burst != 200 {
					t.Errorf("links.sim1 rate, burst = %d, %d; want 50, 200", l.Rate, l.Burst)
				}
				if c.SMSCSim.ReceiptDelay != time.Second {
					t.Errorf("smsc_sim.receipt_delay = %s, want 1s", c.SMSCSim.ReceiptDelay)
				}
			},
		},
		{
			name: "a new link can be defined by the environment alone",
			env: []string{
				"SMSFLOW_LINKS__CZ2__ADDRESS=smsc.example:2775",
				"SMSFLOW_LINKS__CZ2__SYSTEM_ID=acme",
				"SMSFLOW_LINKS__CZ2__PASSWORD=pw",
				"SMSFLOW_LINKS__CZ2__RATE=30",
				"SMSFLOW_POOLS__DEFAULT__LINKS=sim1, cz2",
				"SMSFLOW_POOLS__DEFAULT__PREFIXES=+420,+421",
			},
			check: func(t *testing.T, c Config) {
				want := Link{Address: "smsc.example:2775", SystemID: "acme", Password: "pw",
					Rate: 30, Burst: 30, Window: 10, RespTimeout: 5 * time.Second}
				if got := c.Links["cz2"]; got != want {
					t.Errorf("links.cz2 = %+v, want %+v", safe(got), safe(want))
				}
				if _, ok := c.Links["sim1"]; !ok {
					t.Error("links.sim1 is gone; the environment must not drop default links")
				}
				p := c.Pools["default"]
				if !reflect.DeepEqual(p.Links, []string{"sim1", "cz2"}) || !reflect.DeepEqual(p.Prefixes, []string{"+420", "+421"}) {
					t.Errorf("pools.default = %+v, want links [sim1 cz2], prefixes [+420 +421]", p)
				}
			},
		},
		{
			name: "a file that defines links drops the default link and pool",
			file: `
[links.cz1]
address = "smsc.example:2775"
system_id = "acme"
rate = 100
[pools.cz]
links = ["cz1"]
[policy]
default_pool = "cz"
`,
			check: func(t *testing.T, c Config) {
				if len(c.Links) != 1 || len(c.Pools) != 1 {
					t.Errorf("links %v, pools %v; want only cz1 and cz", c.Redacted()["links"], c.Redacted()["pools"])
				}
				want := Link{Address: "smsc.example:2775", SystemID: "acme", Rate: 100, Burst: 100, Window: 10, RespTimeout: 5 * time.Second}
				if got := c.Links["cz1"]; got != want {
					t.Errorf("links.cz1 = %+v, want the link defaults filled in: %+v", safe(got), safe(want))
				}
			},
		},
		{
			name: "a file that defines only pools keeps the default link",
			file: "[pools.all]\nlinks = [\"sim1\"]\n[policy]\ndefault_pool = \"all\"\n",
			check: func(t *testing.T, c Config) {
				if _, ok := c.Links["sim1"]; !ok || len(c.Pools) != 1 {
					t.Errorf("links %v, pools %v; want sim1 and only the pool all", c.Redacted()["links"], c.Redacted()["pools"])
				}
			},
		},
		{
			name: "explicit burst, window and resp_timeout are kept",
			file: "[links.sim1]\naddress = \"a:1\"\nsystem_id = \"x\"\nrate = 10\nburst = 3\nwindow = 1\nresp_timeout = \"1s\"\n[pools.p]\nlinks = [\"sim1\"]\n[policy]\ndefault_pool = \"p\"\n",
			check: func(t *testing.T, c Config) {
				if l := c.Links["sim1"]; l.Burst != 3 || l.Window != 1 || l.RespTimeout != time.Second {
					t.Errorf("links.sim1 burst, window, resp_timeout = %d, %d, %s; want 3, 1, 1s", l.Burst, l.Window, l.RespTimeout)
				}
			},
		},
		{
			name: "a zero duration may be written as 0",
			env:  []string{"SMSFLOW_SMSC_SIM__RECEIPT_DELAY=0"},
			check: func(t *testing.T, c Config) {
				if c.SMSCSim.ReceiptDelay != 0 {
					t.Errorf("smsc_sim.receipt_delay = %s, want 0", c.SMSCSim.ReceiptDelay)
				}
			},
		},
		{
			name: "booleans and big numbers come from the environment",
			env:  []string{"SMSFLOW_SMSC_SIM__ENABLED=false", "SMSFLOW_HTTP__MAX_BODY_BYTES=1073741824"},
			check: func(t *testing.T, c Config) {
				if c.SMSCSim.Enabled || c.HTTP.MaxBodyBytes != 1<<30 {
					t.Errorf("smsc_sim.enabled = %v, http.max_body_bytes = %d; want false, 1073741824", c.SMSCSim.Enabled, c.HTTP.MaxBodyBytes)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, t.TempDir(), tt.file)
			}
			c, err := Load(path, environ(tt.env...))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// safe renders a Link without its password, for failure messages.
func safe(l Link) any { return redact(reflect.ValueOf(l)) }

func TestProductionExampleLoads(t *testing.T) {
	c, err := Load("examples/production.toml", environ("SMSFLOW_LINKS__CZ1__PASSWORD=pw"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(c.Links) != 3 || c.SMSCSim.Enabled || c.Links["cz1"].Password.Reveal() != "pw" {
		t.Errorf("got %v; want three links, no simulator, cz1's password from the environment", c.Redacted())
	}
}

func TestLoadReportsEveryBadKeyBySource(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		want []string // each must appear in the error
	}{
		{
			name: "a typo in a table name is an unknown key with a suggestion",
			file: "[link.cz1]\nrate = 5\n",
			want: []string{`link: unknown key (in `, `did you mean "links"?`},
		},
		{
			name: "an unknown key inside a link names the full key",
			file: "[links.sim1]\nadress = \"x:1\"\n",
			want: []string{"links.sim1.adress: unknown key", `did you mean "address"?`},
		},
		{
			name: "an unknown environment variable names the variable",
			env:  []string{"SMSFLOW_NATS_URL=nats://x:4222"},
			want: []string{"nats_url: unknown key (from SMSFLOW_NATS_URL)"},
		},
		{
			name: "a word where a number belongs is named with its source",
			file: "[links.sim1]\nrate = \"fast\"\n",
			want: []string{`links.sim1.rate: must be a whole number, got "fast" (in `},
		},
		{
			name: "a word where a price belongs is named with its source",
			env:  []string{"SMSFLOW_LINKS__SIM1__PRICE=cheap"},
			want: []string{`links.sim1.price: must be a number, got "cheap" (from SMSFLOW_LINKS__SIM1__PRICE)`},
		},
		{
			name: "a bad environment value names its variable",
			env:  []string{"SMSFLOW_EGRESS__MAX_ATTEMPTS=ten"},
			want: []string{`egress.max_attempts: must be a whole number, got "ten" (from SMSFLOW_EGRESS__MAX_ATTEMPTS)`},
		},
		{
			name: "a bare number as a duration is refused, it would mean nanoseconds",
			file: "[smsc_sim]\nreceipt_delay = 200\n",
			want: []string{`smsc_sim.receipt_delay: must be a duration like "5s", got 200`},
		},
		{
			name: "a fraction where a whole number belongs is refused",
			file: "[links.sim1]\nwindow = 1.5\n",
			want: []string{"links.sim1.window: must be a whole number, got 1.5"},
		},
		{
			name: "a value where a table belongs is named",
			file: "nats = \"x\"\n",
			want: []string{`nats: must be a table, got "x"`},
		},
		{
			name: "a table where a value belongs is named",
			env:  []string{"SMSFLOW_LOG__LEVEL__X=1"},
			want: []string{"log.level: must be a string, got a table (from SMSFLOW_LOG__LEVEL__X)"},
		},
		{
			name: "problems in the file and the environment are reported together",
			file: "[htpp]\nlisten = \":1\"\n",
			env:  []string{"SMSFLOW_LOG__LEVLE=debug"},
			want: []string{"htpp: unknown key", "log.levle: unknown key (from SMSFLOW_LOG__LEVLE)"},
		},
		{
			name: "a new link with keys missing is reported key by key",
			env:  []string{"SMSFLOW_LINKS__CZ9__RATE=5"},
			want: []string{"links.cz9.address: must be host:port", "links.cz9.system_id: must not be empty"},
		},
		{
			name: "a file with links but no pools points out the missing default pool",
			file: "[links.cz1]\naddress = \"a:1\"\nsystem_id = \"x\"\nrate = 1\n",
			want: []string{`policy.default_pool: pool "default" is not defined in [pools]`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, t.TempDir(), tt.file)
			}
			_, err := Load(path, environ(tt.env...))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadFailsOnAMissingOrBrokenFile(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{filepath.Join(dir, "missing.toml"), writeFile(t, dir, "[nats\n")} {
		if _, err := Load(path, environ()); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Load(%q) = %v, want an error naming the file", path, err)
		}
	}
}

func TestLoadWithNilEnvironUsesTheProcessEnvironment(t *testing.T) {
	t.Setenv("SMSFLOW_HTTP__MAX_BATCH", "7")
	c, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.HTTP.MaxBatch != 7 {
		t.Errorf("http.max_batch = %d, want 7 from the process environment", c.HTTP.MaxBatch)
	}
}
