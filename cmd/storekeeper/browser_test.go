package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"storekeeper/internal/redistest"
	"storekeeper/jobsdb"
)

// chromium finds Debian's chromium. .ci/run installs it and sets
// STOREKEEPER_REQUIRE_BROWSER=1, where a missing browser fails the test
// instead of skipping it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("STOREKEEPER_REQUIRE_BROWSER") == "1" {
		t.Fatal("chromium is not installed and STOREKEEPER_REQUIRE_BROWSER=1 (apt-get install chromium)")
	}
	t.Skip("chromium is not installed: apt-get install chromium, or run .ci/run")
	return ""
}

// browserTab starts browser headless in a fresh profile and returns a tab
// that lives until the test ends, limit passes or close is called; extra
// options are added to the defaults.
func browserTab(t *testing.T, browser string, limit time.Duration, extra ...chromedp.ExecAllocatorOption) (tab context.Context, close func()) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-quic", true), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(opts, extra...)...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTime := context.WithTimeout(ctx, limit)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	return ctx, cancelTab
}

// updateScreenshotEnv, set to 1, makes TestDashboardInBrowser rewrite
// docs/dashboard.png.
const updateScreenshotEnv = "STOREKEEPER_UPDATE_SCREENSHOT"

// The dashboard in a real headless Chromium against the real binary on a
// real Redis: sign in, compact a demo store and see the job run, succeed
// and land in the history without a reload, restore a store and see it go
// restoring → open. With STOREKEEPER_UPDATE_SCREENSHOT=1 it also saves
// docs/dashboard.png, the README's screenshot; a plain run (make test)
// never writes into the repository.
func TestDashboardInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a browser")
	}
	browser := chromium(t)
	bin := buildBinary(t)
	rs := redistest.Start(t)
	dir := t.TempDir()
	const token = "browser-test-operator-token"
	srv := startProcess(t, bin, "serve", nil, "serve", "--demo", "--redis", rs.URL(), "--node", "demo-node",
		"--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups"),
		"--tokens", "ops:operator:"+token, "--schedule-compact", "off", "--schedule-backup", "off", "--schedule-verify", "off",
		"--push-allow-private", // the browser's push service is on loopback
		// A backup target: the commit log is shipped, so a store can be
		// restored to a moment.
		"--backup-target", "vault=file://"+filepath.Join(dir, "vault")+"?create_dir=1")
	srv.waitReady(t)
	base := "http://" + srv.addr

	// The demo seeds its stores and backs each up once; wait for that.
	waitFor(t, 60*time.Second, "the demo stores backed up", func() bool {
		req, _ := http.NewRequest("GET", base+"/api/stores", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v struct {
			Stores []struct {
				Backups []any `json:"backups"`
			} `json:"stores"`
		}
		if json.NewDecoder(resp.Body).Decode(&v) != nil || len(v.Stores) != len(demoStores) {
			return false
		}
		for _, s := range v.Stores {
			if len(s.Backups) == 0 {
				return false
			}
		}
		return true
	})

	ctx, closeTab := browserTab(t, browser, 90*time.Second, chromedp.WindowSize(1400, 1000))

	type css = chromedp.CSS
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			// Bounded: once the tab's own deadline has passed, a call on
			// it may never answer (a CI run hung here for 9 minutes).
			dump, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			page, _ := chromedp.Run(dump, chromedp.OuterHTML(css("main")))
			cancel()
			t.Fatalf("%s: %v\npage:\n%s", what, err, page)
		}
	}
	eval := func(expr string, opts ...chromedp.EvaluateOption) any {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr, opts...))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	do("open the page", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#login-form")))
	if eval(`document.querySelector("#login").hidden`) != false {
		t.Fatal("the page did not ask for a token")
	}
	do("sign in",
		chromedp.SendKeys(css("#token"), token),
		chromedp.Click(css(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(css("#app")),
		chromedp.WaitVisible(css(`#stores tr[data-store="orders"]`)),
		chromedp.WaitVisible(css("#conn.conn-live")), // the server said stream.live: subscribed
	)

	// Web Push from the page: the button subscribes through the service
	// worker and POSTs the subscription; a second click forgets it. Headless
	// Chromium has no push service offline, so PushManager is stubbed with a
	// subscription a browser would make (a real P-256 key and auth secret);
	// the service worker, the key fetch and the API calls are real. Delivery
	// to a subscription is tested in worker/push_test.go.
	do("the push button", chromedp.WaitVisible(css("#push")))
	eval(`(async () => {
		const b64u = (u) => btoa(String.fromCharCode(...u)).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
		const kp = await crypto.subtle.generateKey({name: "ECDH", namedCurve: "P-256"}, true, ["deriveBits"]);
		const p256dh = b64u(new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey)));
		const auth = b64u(crypto.getRandomValues(new Uint8Array(16)));
		window.__sub = null;
		Notification.requestPermission = async () => "granted";
		PushManager.prototype.getSubscription = async function () { return window.__sub; };
		PushManager.prototype.subscribe = async function (opts) {
			window.__appKey = b64u(new Uint8Array(opts.applicationServerKey));
			window.__sub = {
				endpoint: "http://127.0.0.1:9/push/browser-test",
				toJSON() { return {endpoint: this.endpoint, expirationTime: null, keys: {p256dh, auth}}; },
				unsubscribe: async () => { window.__sub = null; return true; },
			};
			return window.__sub;
		};
		return true;
	})()`, chromedp.EvalAwaitPromise)
	rdb := rs.Client(t)
	subscriptions := func() int {
		ids, err := jobsdb.PushSubscriptionIDs(t.Context(), rdb)
		if err != nil {
			t.Fatal(err)
		}
		return len(ids)
	}
	do("subscribe", chromedp.Click(css("#push")), chromedp.WaitVisible(css(`#push[data-on="1"]`)))
	keys, err := jobsdb.VAPID(t.Context(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	if n := subscriptions(); n != 1 {
		t.Fatalf("%d push subscriptions after subscribing, want 1", n)
	}
	if got := eval(`window.__appKey`); got != strings.TrimRight(keys.Public, "=") {
		t.Fatalf("the page subscribed with applicationServerKey %v, want the VAPID public key %s", got, keys.Public)
	}
	do("unsubscribe", chromedp.Click(css("#push")), chromedp.WaitVisible(css(`#push:not([data-on="1"])`)))
	if n := subscriptions(); n != 0 {
		t.Fatalf("%d push subscriptions after unsubscribing, want 0", n)
	}

	// Record what the page shows as it changes: the running jobs list and
	// the state of the sessions store. A marker on window proves there was
	// no reload.
	eval(`
		window.__noReload = true;
		window.__running = [];
		window.__states = [];
		new MutationObserver(() => {
			for (const li of document.querySelectorAll("#running li[data-job]")) {
				window.__running.push(li.dataset.job + " " + li.textContent);
			}
		}).observe(document.querySelector("#running"), {childList: true, subtree: true, characterData: true});
		new MutationObserver(() => {
			const el = document.querySelector('#stores tr[data-store="sessions"] [data-role="state"]');
			const s = el && el.textContent;
			if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
		}).observe(document.querySelector("#stores tbody"), {childList: true, subtree: true, characterData: true});
		true`)

	// Compact orders from its row.
	succeeded := css(`#feed li[data-type="job.succeeded"][data-store="orders"]`)
	// The store table is rendered anew on events and refreshes: a row's
	// button is clicked in the page, by its selector, rather than through a
	// node id that a render may have replaced meanwhile.
	click := func(what, sel string) {
		t.Helper()
		do(what, chromedp.WaitVisible(css(sel)))
		if clicked := eval(fmt.Sprintf(`(() => { const b = document.querySelector(%q); if (!b) return false; b.click(); return true })()`, sel)); clicked != true {
			t.Fatalf("%s: %s is gone", what, sel)
		}
	}
	click("compact orders", `button[data-action="compact"][data-store="orders"]`)
	do("the compaction succeeded", chromedp.WaitVisible(succeeded))
	attr, err := chromedp.Run(ctx, chromedp.AttributeValue(succeeded, "data-job"))
	if err != nil || attr.Value == "" {
		t.Fatalf("job id of the succeeded compaction: %v %v", attr, err)
	}
	jobID := attr.Value
	do("the compaction's history row, without a reload", chromedp.WaitVisible(css(fmt.Sprintf(`#history tr[data-job=%q]`, jobID))))
	for _, typ := range []string{"job.enqueued", "job.started"} {
		if eval(fmt.Sprintf(`!!document.querySelector('#feed li[data-type=%q][data-job=%q]')`, typ, jobID)) != true {
			t.Fatalf("the live feed lacks %s of %s", typ, jobID)
		}
	}
	if eval(`!!document.querySelector('#feed li[data-type="stream.live"]')`) != false {
		t.Fatal("the live feed lists stream.live as an event")
	}
	running, _ := eval(`window.__running`).([]any)
	shown := false
	for _, r := range running {
		shown = shown || strings.HasPrefix(fmt.Sprint(r), jobID+" compact orders")
	}
	if !shown {
		t.Fatalf("the running jobs list never showed %s: %q", jobID, running)
	}

	// Restore sessions from its newest backup, through the confirmation.
	click("restore sessions", `button[data-action="restore"][data-store="sessions"]`)
	do("the restore confirmation", chromedp.WaitVisible(css("#restore-dialog[open]")))
	if window, _ := chromedp.Run(ctx, chromedp.Text(css("#restore-window"))); !strings.Contains(window, "will be rolled back") {
		t.Fatalf("the restore confirmation does not state the rollback window: %q", window)
	}
	do("confirm the restore",
		chromedp.Click(css("#restore-confirm")),
		chromedp.WaitVisible(css(`#feed li[data-type="store.restored"][data-store="sessions"]`)),
		chromedp.WaitVisible(css(`#history tr.st-restored`)),
	)
	var states []string
	waitFor(t, 10*time.Second, "sessions back to open", func() bool {
		states = states[:0]
		list, _ := eval(`window.__states`).([]any)
		for _, v := range list {
			states = append(states, fmt.Sprint(v))
		}
		return len(states) >= 2 && states[len(states)-1] == "open"
	})
	if i := slices.Index(states, "restoring"); i < 0 || !slices.Contains(states[i:], "open") {
		t.Fatalf("sessions states shown: %q, want restoring then open", states)
	}
	if eval(`window.__noReload === true`) != true {
		t.Fatal("the page reloaded")
	}

	// Restore metrics to a moment a second ago: the dialog offers it (the
	// store's log is shipped: the row says how far behind), and the feed
	// says what came back.
	do("metrics' shipping lag shown", chromedp.WaitVisible(css(`#stores tr[data-store="metrics"] [data-role="ship-lag"]`)))
	// Its backup target is named, with whether its node encrypts for it.
	if offsite, err := chromedp.Run(ctx, chromedp.Text(css(`#stores tr[data-store="metrics"] [data-role="offsite"]`))); err != nil || !strings.Contains(offsite, "vault (unencrypted)") {
		t.Fatalf("metrics' row names its backup target as %q (%v), want vault (unencrypted)", offsite, err)
	}
	click("restore metrics", `button[data-action="restore"][data-store="metrics"]`)
	do("the restore confirmation", chromedp.WaitVisible(css("#restore-dialog[open]")))
	// A moment before the store's commit log starts is explained as such.
	eval(`(() => {
		document.querySelector('input[name="restore-mode"][value="moment"]').click();
		const at = document.querySelector("#restore-at");
		at.value = "2001-01-01T00:00:00";
		at.dispatchEvent(new Event("input"));
	})()`)
	if window, _ := chromedp.Run(ctx, chromedp.Text(css("#restore-window"))); !strings.Contains(window, "commit log starts at") {
		t.Fatalf("the restore confirmation does not say a moment in 2001 is before metrics' log starts: %q", window)
	}
	// The moment: the newest backup's log_at (it holds nothing committed
	// after it) rounded up to the picker's whole second.
	eval(`(() => {
		const s = state.stores.find((x) => x.name === "metrics");
		const t = Math.ceil(new Date(s.backups[0].log_at).getTime() / 1000) * 1000;
		const at = document.querySelector("#restore-at"), d = new Date(t), pad = (n) => String(n).padStart(2, "0");
		at.value = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
		at.dispatchEvent(new Event("input"));
	})()`)
	if window, _ := chromedp.Run(ctx, chromedp.Text(css("#restore-window"))); !strings.Contains(window, "every later one rolled back") {
		t.Fatalf("the restore confirmation does not state what a restore to a moment keeps: %q", window)
	}
	do("confirm the restore to a moment",
		chromedp.Click(css("#restore-confirm")),
		chromedp.WaitVisible(css(`#feed li[data-type="store.restored"][data-store="metrics"]`)),
	)
	if text, _ := chromedp.Run(ctx, chromedp.Text(css(`#feed li[data-type="store.restored"][data-store="metrics"]`))); !strings.Contains(text, "shipped commit log") {
		t.Fatalf("the feed's store.restored for metrics: %q", text)
	}

	// The README's screenshot, only when asked for.
	if os.Getenv(updateScreenshotEnv) == "1" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "dashboard.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("wrote docs/dashboard.png")
	}
	closeTab() // before the server stops: the WebSocket closes from the browser's side
	srv.stop(t)
	for _, l := range strings.Split(srv.logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "panic") {
			t.Errorf("server logged: %s", l)
		}
	}
}
