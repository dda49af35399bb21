package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretsNeverLeak(t *testing.T) {
	const natsPW, simPW, linkPW = "natsPW-4a1c9e", "simPW1", "linkPW2"
	c, err := Load("", environ(
		"SMSFLOW_NATS__URL=nats://x:4222",
		"SMSFLOW_NATS__USER=u",
		"SMSFLOW_NATS__PASSWORD="+natsPW,
		"SMSFLOW_SMSC_SIM__PASSWORD="+simPW,
		"SMSFLOW_LINKS__SIM1__PASSWORD="+linkPW,
	))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.NATS.Password.Reveal() != natsPW || c.SMSCSim.Password.Reveal() != simPW || c.Links["sim1"].Password.Reveal() != linkPW {
		t.Fatal("Reveal does not return the configured passwords")
	}

	slogOut := func(h func(*bytes.Buffer) slog.Handler) string {
		var buf bytes.Buffer
		log := slog.New(h(&buf))
		log.Info("config", "cfg", c, "pw", c.NATS.Password, "links", c.Links, "redacted", c.Redacted())
		log.Info("group", slog.Group("nats", "password", c.NATS.Password))
		return buf.String()
	}
	mustJSON := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		return string(b)
	}
	var anyC any = c // every verb, even those vet flags for a struct
	outputs := []struct {
		name, out string
	}{
		{"fmt %v", fmt.Sprintf("%v", c)},
		{"fmt %+v", fmt.Sprintf("%+v", c)},
		{"fmt %#v", fmt.Sprintf("%#v", c)},
		{"fmt %s", fmt.Sprintf("%s", anyC)},
		{"fmt %q", fmt.Sprintf("%q", anyC)},
		{"fmt %x", fmt.Sprintf("%x", anyC)},
		{"fmt %d", fmt.Sprintf("%d", anyC)},
		{"fmt %v of a link", fmt.Sprintf("%v", c.Links["sim1"])},
		{"fmt %v of a pointer", fmt.Sprintf("%+v", &c)},
		{"fmt %v of the secret", fmt.Sprint(c.NATS.Password)},
		{"slog text", slogOut(func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) })},
		{"slog json", slogOut(func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) })},
		{"json.Marshal of Config", mustJSON(c)},
		{"json.Marshal of Redacted", mustJSON(c.Redacted())},
		{"fmt %v of Redacted", fmt.Sprintf("%v", c.Redacted())},
	}
	for _, o := range outputs {
		for _, pw := range []string{natsPW, simPW, linkPW} {
			if strings.Contains(o.out, pw) {
				t.Errorf("%s shows a password:\n%s", o.name, o.out)
			}
		}
		if !strings.Contains(o.out, "[redacted]") {
			t.Errorf("%s does not say [redacted]:\n%s", o.name, o.out)
		}
	}
}

func TestABadPasswordValueIsNotEchoed(t *testing.T) {
	path := writeFile(t, t.TempDir(), "[links.sim1]\npassword = [\"hunter22\"]\n")
	_, err := Load(path, environ("SMSFLOW_SMSC_SIM__PASSWORD__X=hunter33"))
	if err == nil {
		t.Fatal("Load succeeded, want an error")
	}
	for _, want := range []string{"links.sim1.password: must be a string, got a list", "smsc_sim.password: must be a string, got a table"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestSecretMarshalsRedacted(t *testing.T) {
	s := Secret("x")
	text, _ := s.MarshalText()
	js, _ := s.MarshalJSON()
	if string(text) != "[redacted]" || string(js) != `"[redacted]"` || s.String() != "[redacted]" || s.LogValue().String() != "[redacted]" {
		t.Errorf("text %s, json %s, String %s, LogValue %s; want [redacted] each", text, js, s.String(), s.LogValue())
	}
}
