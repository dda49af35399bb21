package config

import (
	"os"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as the TOML file: it must return an
// error or a config that validates, and never panic.
func FuzzLoad(f *testing.F) {
	f.Add(defaultTOML)
	if b, err := os.ReadFile("examples/production.toml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"[link.cz1]\nrate = 5\n",
		"[links.\"a.b\"]\nrate = 1\n",
		"[links]\n",
		"links = []\n",
		"[[links]]\nrate = 1\n",
		"[links.x]\nrate = nan\nwindow = inf\nburst = 1e300\n",
		"[links.x]\nresp_timeout = 1979-05-27T07:32:00Z\n",
		"[pools.p]\nlinks = [1, [2], {a = 3}]\n",
		"[egress]\nbackoff_min = \"-1s\"\nmax_attempts = -9223372036854775808\n",
		"[nats]\nurl = \"::::\"\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir() // one file per worker process, rewritten each run: inputs run one at a time
	f.Fuzz(func(t *testing.T, data []byte) {
		path := writeFile(t, dir, string(data))
		c, err := Load(path, environ())
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load returned a config that does not validate: %v", err)
		}
	})
}
