package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/natstest"
)

// chromium finds Debian's chromium, or skips the test (fails it when
// REQUIRE_CHROMIUM=1, as in CI, so a missing browser is not a silent pass).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("REQUIRE_CHROMIUM") == "1" {
		t.Fatal("chromium not found on PATH and REQUIRE_CHROMIUM=1 (apt-get install -y chromium)")
	}
	t.Skip("chromium not found on PATH: skipping the live page test (apt-get install -y chromium; REQUIRE_CHROMIUM=1 makes this a failure)")
	return ""
}

// browser starts a headless chromium with a fresh profile and returns a tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // root in a container has no user namespace for the sandbox
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	return ctx
}

// TestTheLivePageFollowsARun loads the page in headless chromium while
// messages flow through a real run (embedded NATS, the SMPP simulator, every
// stage), and checks in the DOM that the figures follow: delivered 0, then
// 100, then 200, a non-zero rate on the link, success 100 %, the cost of 200
// parts, the egress queue, and the campaign (its progress, or a clear note if
// this build has no campaign endpoint). It saves a screenshot in the test's
// temp dir (and to $TEST_DASHBOARD_SCREENSHOT if set, to look at it).
func TestTheLivePageFollowsARun(t *testing.T) {
	ctx := browser(t)
	in := newInstance(t, "SMSFLOW_LINKS__SIM1__PRICE=0.05")
	cfg := in.config(t)
	stages, _ := parseStages(strings.Join(allStages, ","))
	r := start(t, func(ctx context.Context) error {
		return run(ctx, cfg, stages, discardLogger(), prometheus.NewRegistry())
	})
	in.waitReady(t, r)

	text := func(id string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.getElementById(%q)||{}).textContent||""`, id)))
		if err != nil {
			t.Fatalf("read #%s: %v", id, err)
		}
		return s
	}
	query := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return s
	}
	waitText := func(id, want string) {
		t.Helper()
		natstest.Eventually(t, wait, fmt.Sprintf("want #%s to read %q", id, want), func() bool { return text(id) == want })
	}

	if err := chromedp.Do(ctx,
		chromedp.Navigate("http://"+in.httpAddr+"/?campaign=page"),
		chromedp.WaitVisible(chromedp.CSS(`#links tr[data-link="sim1"]`)),
	); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	if got := text("count-delivered"); got != "0" {
		t.Fatalf("#count-delivered before any message = %q, want 0", got)
	}
	// The link reports its health to KV a moment after it binds.
	natstest.Eventually(t, wait, "want sim1's state to read bound", func() bool {
		return query(`document.querySelector('#links tr[data-link="sim1"] .state').textContent`) == "bound"
	})

	in.postBatch(t, "page", 0, 100)
	// The rates average over the last 5 s: each is watched from the post
	// on, not after the batch is delivered (on a loaded machine that may
	// take longer than the window).
	var inRate, sendRate bool
	natstest.Eventually(t, wait, "want 100 delivered, and a non-zero in rate and send rate on sim1 seen on the way", func() bool {
		if v, err := strconv.ParseFloat(text("in-rate"), 64); err == nil && v > 0 {
			inRate = true
		}
		if v, err := strconv.ParseFloat(query(`document.querySelector('#links tr[data-link="sim1"] .send-rate').textContent`), 64); err == nil && v > 0 {
			sendRate = true
		}
		return inRate && sendRate && text("count-delivered") == "100"
	})

	in.postBatch(t, "page", 100, 100)
	waitText("count-delivered", "200")
	waitText("count-accepted", "200")
	waitText("success-rate", "100.0 %")
	waitText("cost-total", "10.00")
	if got := query(`String(document.querySelectorAll('#queues tr[data-consumer="SMS_EGRESS/egress-default"]').length)`); got != "1" {
		t.Errorf("egress queue rows = %s, want 1", got)
	}
	if lat := text("lat-del-avg"); !strings.HasSuffix(lat, " ms") {
		t.Errorf("#lat-del-avg = %q, want a latency in ms", lat)
	}

	// The campaign box: a progress bar when GET /v1/campaigns/{c} exists in
	// this build, a note that says so when it does not.
	if code, _ := get(t, "http://"+in.httpAddr+"/v1/campaigns/page"); code == http.StatusNotFound {
		natstest.Eventually(t, wait, "want the campaign note for a missing endpoint", func() bool {
			return strings.Contains(text("campaign-note"), `No campaign "page"`)
		})
	} else {
		natstest.Eventually(t, wait, "want the campaign at 200 of 200", func() bool {
			return strings.HasPrefix(text("campaign-text"), "200 of 200") &&
				query(`document.getElementById('campaign-bar').style.width`) == "100%"
		})
	}
	if e := text("error"); e != "" {
		t.Errorf("the page shows an error: %q", e)
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: png
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if p := os.Getenv("TEST_DASHBOARD_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}
