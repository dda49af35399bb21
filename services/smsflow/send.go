package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/smsflow/smsflow/pkg/status"
)

// sendOptions are the flags of `smsflow send`.
type sendOptions struct {
	file, text, campaign, kind, api, column, from string
	batch                                         int
	dryRun, follow                                bool
	followFor                                     time.Duration
}

func parseSend(args []string, stderr io.Writer) (sendOptions, error) {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o sendOptions
	fs.StringVar(&o.file, "file", "", "CSV file with a header row: a number column and any columns the text uses")
	fs.StringVar(&o.text, "text", "", "message text, a Go template over the row's columns: 'Hi {{.name}}'")
	fs.StringVar(&o.campaign, "campaign", "", "campaign name (required): with the row number it makes each message's id, so a re-run sends nothing twice")
	fs.StringVar(&o.kind, "kind", "marketing", "marketing or transactional")
	fs.StringVar(&o.from, "from", "", "sender (optional)")
	fs.StringVar(&o.api, "api", "http://127.0.0.1:8080", "smsflow HTTP API")
	fs.StringVar(&o.column, "number-column", "number", "the column with the phone number")
	fs.IntVar(&o.batch, "batch", 500, "messages per request")
	fs.BoolVar(&o.dryRun, "dry-run", false, "check every row against policy (blacklist, opt-out, caps) without queueing anything")
	fs.BoolVar(&o.follow, "follow", false, "after sending, show the campaign's delivery progress until every message is final")
	fs.DurationVar(&o.followFor, "follow-for", 0, "with --follow, give up after this long (0: until done or Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("%w: send takes no arguments, got %q", errUsage, fs.Args())
	case o.file == "" || o.text == "" || o.campaign == "":
		return o, fmt.Errorf("%w: send needs --file, --text and --campaign", errUsage)
	case o.kind != "marketing" && o.kind != "transactional":
		return o, fmt.Errorf("%w: --kind must be marketing or transactional", errUsage)
	case o.batch < 1 || o.batch > 10000:
		return o, fmt.Errorf("%w: --batch must be 1..10000", errUsage)
	}
	return o, nil
}

// sendRow is one message built from a CSV row.
type sendRow struct {
	Line int // 1-based line in the file (the header is line 1)
	Msg  map[string]string
}

// campaignRows reads the CSV and renders each row's message. Its id and
// external_id come from the campaign and the line alone, so running the
// same file again names the same messages: the stream's dedup window and
// policy's already-handled check then send none of them twice.
func campaignRows(r io.Reader, o sendOptions) ([]sendRow, error) {
	tmpl, err := template.New("text").Option("missingkey=error").Parse(o.text)
	if err != nil {
		return nil, fmt.Errorf("--text: %w", err)
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", o.file, err)
	}
	for i := range header {
		header[i] = strings.TrimSpace(strings.TrimPrefix(header[i], "\ufeff"))
	}
	numCol := -1
	for i, h := range header {
		if h == o.column {
			numCol = i
		}
	}
	if numCol < 0 {
		return nil, fmt.Errorf("%s: no %q column in the header %q (see --number-column)", o.file, o.column, header)
	}
	sum := sha256.Sum256([]byte(o.campaign))
	prefix := "c" + hex.EncodeToString(sum[:8]) + "-"
	var rows []sendRow
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.file, err)
		}
		if len(rec) != len(header) {
			return nil, fmt.Errorf("%s line %d: %d fields, the header has %d", o.file, line, len(rec), len(header))
		}
		vals := make(map[string]string, len(header))
		for i, h := range header {
			vals[h] = rec[i]
		}
		var text strings.Builder
		if err := tmpl.Execute(&text, vals); err != nil {
			return nil, fmt.Errorf("%s line %d: --text: %w", o.file, line, err)
		}
		id := prefix + strconv.Itoa(line)
		msg := map[string]string{"id": id, "external_id": id, "to": rec[numCol], "text": text.String(),
			"kind": o.kind, "campaign": o.campaign}
		if o.from != "" {
			msg["from"] = o.from
		}
		rows = append(rows, sendRow{Line: line, Msg: msg})
	}
}

// apiAnswer is the union of POST /v1/messages answers we read.
type apiAnswer struct {
	IDs    []string `json:"ids"`
	Error  string   `json:"error"`
	Errors []struct {
		Index int    `json:"index"`
		Field string `json:"field"`
		Error string `json:"error"`
	} `json:"errors"`
	Results *[]struct {
		Index    int    `json:"index"`
		ID       string `json:"id"`
		Rejected string `json:"rejected"`
		Detail   string `json:"detail"`
	} `json:"results"`
}

func sendCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseSend(args, stderr)
	if err != nil {
		return err
	}
	f, err := os.Open(o.file)
	if err != nil {
		return err
	}
	rows, err := campaignRows(f, o)
	f.Close()
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("%s: no rows", o.file)
	}
	c := &apiClient{base: strings.TrimRight(o.api, "/"), http: &http.Client{Timeout: time.Minute}}
	if o.dryRun {
		return dryRun(ctx, c, o, rows, stdout, stderr)
	}
	bar := progressbar.NewOptions(len(rows), progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("queued"),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("msg"),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }))
	queued, invalid := 0, 0
	for start := 0; start < len(rows); start += o.batch {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "\ninterrupted after %d of %d rows; run the same command again to send the rest (nothing is sent twice)\n", start, len(rows))
			return ctx.Err()
		}
		batch := rows[start:min(start+o.batch, len(rows))]
		q, bad, err := c.queue(ctx, batch, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "\nstopped after %d of %d rows: %v; run the same command again to send the rest (nothing is sent twice)\n", start, len(rows), err)
			return err
		}
		queued, invalid = queued+q, invalid+bad
		_ = bar.Add(len(batch))
	}
	_ = bar.Finish()
	fmt.Fprintf(stdout, "campaign %s: %d rows queued, %d invalid (not sent)\n", o.campaign, queued, invalid)
	if o.follow {
		return follow(ctx, c, o, queued, stdout, stderr)
	}
	return nil
}

type apiClient struct {
	base string
	http *http.Client
}

func (c *apiClient) post(ctx context.Context, body any) (int, apiAnswer, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, apiAnswer{}, err
	}
	// A request cut by Ctrl-C may or may not have been queued: either way a
	// re-run sends the same ids, so it is safe to let it finish first.
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, c.base+"/v1/messages", bytes.NewReader(data))
	if err != nil {
		return 0, apiAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, apiAnswer{}, err
	}
	defer resp.Body.Close()
	var a apiAnswer
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &a); err != nil {
		return resp.StatusCode, a, fmt.Errorf("%s answered %d: %.200s", c.base, resp.StatusCode, raw)
	}
	return resp.StatusCode, a, nil
}

// queue posts one batch. Rows the API finds invalid are reported and left
// out, and the rest posted again; a 503 is retried (the same request is
// safe to repeat).
func (c *apiClient) queue(ctx context.Context, batch []sendRow, stderr io.Writer) (queued, invalid int, err error) {
	for attempt := 0; ; attempt++ {
		msgs := make([]map[string]string, len(batch))
		for i, r := range batch {
			msgs[i] = r.Msg
		}
		code, a, err := c.post(ctx, map[string]any{"messages": msgs})
		switch {
		case err != nil && code == 0 && attempt < 5:
			time.Sleep(time.Duration(attempt+1) * 500 * time.Millisecond)
			continue
		case err != nil:
			return queued, invalid, err
		case code == http.StatusAccepted:
			return queued + len(batch), invalid, nil
		case code == http.StatusServiceUnavailable && attempt < 10:
			time.Sleep(time.Second)
			continue
		case code == http.StatusBadRequest && len(a.Errors) > 0:
			bad := map[int]bool{}
			for _, e := range a.Errors {
				if e.Index >= 0 && e.Index < len(batch) {
					bad[e.Index] = true
					fmt.Fprintf(stderr, "\nline %d: %s: %s (not sent)\n", batch[e.Index].Line, e.Field, e.Error)
				}
			}
			if len(bad) == 0 {
				return queued, invalid, fmt.Errorf("API refused the batch: %s", a.Error)
			}
			var rest []sendRow
			for i, r := range batch {
				if !bad[i] {
					rest = append(rest, r)
				}
			}
			invalid += len(bad)
			if batch = rest; len(batch) == 0 {
				return queued, invalid, nil
			}
		default:
			return queued, invalid, fmt.Errorf("API answered %d: %s", code, a.Error)
		}
	}
}

// dryRun asks the API to check each row against policy, queueing nothing,
// and prints what would be rejected and why. It first checks that the API
// knows dry runs, with a probe that an API without them refuses as
// invalid: nothing can be queued by mistake.
func dryRun(ctx context.Context, c *apiClient, o sendOptions, rows []sendRow, stdout, stderr io.Writer) error {
	probe := map[string]any{"messages": []map[string]string{{"to": "", "text": ""}}, "policy": "on_build", "dry_run": true}
	code, a, err := c.post(ctx, probe)
	if err != nil {
		return err
	}
	if a.Results == nil {
		return fmt.Errorf("the API at %s does not support dry runs (POST /v1/messages with \"policy\":\"on_build\",\"dry_run\":true answered %d without results); nothing was sent", c.base, code)
	}
	bar := progressbar.NewOptions(len(rows), progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("checked"),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }))
	reasons := map[string]int{}
	ok := 0
	for start := 0; start < len(rows); start += o.batch {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		batch := rows[start:min(start+o.batch, len(rows))]
		msgs := make([]map[string]string, len(batch))
		for i, r := range batch {
			msgs[i] = r.Msg
		}
		code, a, err := c.post(ctx, map[string]any{"messages": msgs, "policy": "on_build", "dry_run": true})
		if err != nil {
			return err
		}
		if a.Results == nil {
			return fmt.Errorf("dry run: API answered %d without results: %s", code, a.Error)
		}
		for _, r := range *a.Results {
			if r.Rejected == "" {
				ok++
				continue
			}
			reasons[r.Rejected]++
			line := 0
			if r.Index >= 0 && r.Index < len(batch) {
				line = batch[r.Index].Line
			}
			fmt.Fprintf(stdout, "line %d: would be rejected: %s %s\n", line, r.Rejected, r.Detail)
		}
		_ = bar.Add(len(batch))
	}
	_ = bar.Finish()
	fmt.Fprintf(stdout, "dry run of campaign %s: %d rows would be sent, %d rejected %v; nothing was queued\n", o.campaign, ok, len(rows)-ok, reasons)
	return nil
}

// follow polls the campaign until every queued message is final.
func follow(ctx context.Context, c *apiClient, o sendOptions, want int, stdout, stderr io.Writer) error {
	if o.followFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.followFor)
		defer cancel()
	}
	bar := progressbar.NewOptions(want, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("final"),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("msg"),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }))
	u := c.base + "/v1/campaigns/" + url.PathEscape(o.campaign)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return fmt.Errorf("--follow: the API at %s has no campaign progress (GET /v1/campaigns/{campaign} answered %d); the messages are queued", c.base, resp.StatusCode)
		}
		var a status.CampaignCounts // GET /v1/campaigns/{campaign}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &a) != nil {
			return fmt.Errorf("--follow: GET %s answered %d: %.200s", u, resp.StatusCode, raw)
		}
		_ = bar.Set(int(a.Terminal))
		if a.Terminal >= int64(want) {
			_ = bar.Finish()
			fmt.Fprintf(stdout, "campaign %s: %d of %d final %v\n", o.campaign, a.Terminal, a.Total, a.Counts)
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stdout, "\ncampaign %s: %d of %d final %v (still going)\n", o.campaign, a.Terminal, a.Total, a.Counts)
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
