package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/services/smscsim"
)

// The SMPP keys of a link reach smpplink.Config; a TLS link gets a client
// config for its host that trusts tls_ca, and an unreadable tls_ca stops the
// start with the link's name.
func TestLinkOptionsCarryTheSMPPKeys(t *testing.T) {
	_, caPEM, err := smscsim.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "smsflow.toml")
	toml := "[links.cz1]\naddress = \"smsc.example:3550\"\nsystem_id = \"acme\"\nrate = 10\nsessions = 3\nbind_mode = \"tx_rx\"\n" +
		"enquire_link = \"30s\"\nsplit = \"sar\"\ntls = true\ntls_ca = \"" + ca + "\"\n[pools.p]\nlinks = [\"cz1\"]\n[policy]\ndefault_pool = \"p\"\n"
	if err := os.WriteFile(file, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, func() []string { return nil })
	if err != nil {
		t.Fatal(err)
	}
	los, err := linkOptions(cfg)
	if err != nil || len(los) != 1 {
		t.Fatalf("linkOptions = %d links, %v; want 1", len(los), err)
	}
	c := los[0].SMPP
	if c.Sessions != 3 || c.BindMode != smpplink.BindTXRX || c.Split != smpplink.SplitSAR || c.EnquireLink != 30*time.Second ||
		c.TLS == nil || c.TLS.ServerName != "smsc.example" || c.TLS.RootCAs == nil || c.TLS.InsecureSkipVerify {
		t.Fatalf("smpplink.Config = %+v", c)
	}

	if err := os.Remove(ca); err != nil {
		t.Fatal(err)
	}
	if _, err := linkOptions(cfg); err == nil || !strings.Contains(err.Error(), "links.cz1") {
		t.Fatalf("linkOptions with tls_ca gone = %v, want an error naming links.cz1", err)
	}
}
