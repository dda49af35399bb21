package main

import (
	"io"
	"strings"
	"testing"
)

func TestCampaignRowsRenderTheTemplateWithStableIDs(t *testing.T) {
	csv := "\ufeffname,number,city\nAna,+420600000001,\"Brno, CZ\"\nBo,+420600000002,Praha\n"
	o := sendOptions{file: "c.csv", text: "Hi {{.name}} in {{.city}}", campaign: "spring", kind: "marketing", column: "number"}
	rows, err := campaignRows(strings.NewReader(csv), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Msg["text"] != "Hi Ana in Brno, CZ" || rows[1].Msg["to"] != "+420600000002" || rows[0].Line != 2 {
		t.Fatalf("rows = %+v", rows)
	}
	if rows[0].Msg["id"] == rows[1].Msg["id"] || rows[0].Msg["external_id"] != rows[0].Msg["id"] || rows[0].Msg["campaign"] != "spring" {
		t.Errorf("ids: %+v", rows)
	}
	again, _ := campaignRows(strings.NewReader(csv), o)
	if again[1].Msg["id"] != rows[1].Msg["id"] {
		t.Errorf("same campaign and row gave ids %q and %q", rows[1].Msg["id"], again[1].Msg["id"])
	}
	o.campaign = "autumn"
	other, _ := campaignRows(strings.NewReader(csv), o)
	if other[1].Msg["id"] == rows[1].Msg["id"] {
		t.Errorf("two campaigns share id %q", rows[1].Msg["id"])
	}
}

func TestCampaignRowsRefuseBadInput(t *testing.T) {
	o := sendOptions{file: "c.csv", text: "Hi {{.name}}", campaign: "c", kind: "marketing", column: "number"}
	for name, csv := range map[string]string{
		"no number column":   "name,phone\nA,+420600000001\n",
		"unknown field":      "number,city\n+420600000001,Brno\n",
		"ragged row":         "name,number\nA,+420600000001,extra\n",
		"empty file":         "",
		"unterminated quote": "name,number\n\"A,+420600000001\n",
	} {
		if _, err := campaignRows(strings.NewReader(csv), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	o.text = "Hi {{.name"
	if _, err := campaignRows(strings.NewReader("name,number\nA,1\n"), o); err == nil {
		t.Error("a broken template was accepted")
	}
}

func TestSendFlagsAreChecked(t *testing.T) {
	for _, args := range [][]string{{}, {"--file", "f", "--text", "t"}, {"--file", "f", "--text", "t", "--campaign", "c", "--kind", "spam"},
		{"--file", "f", "--text", "t", "--campaign", "c", "--batch", "0"}} {
		if _, err := parseSend(args, io.Discard); err == nil {
			t.Errorf("parseSend(%q) accepted", args)
		}
	}
}
