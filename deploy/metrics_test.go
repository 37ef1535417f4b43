package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// exposed is what a server's /metrics offers: series name → label names.
type exposed map[string]map[string]bool

// buildBinary builds storekeeper into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "storekeeper")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/storekeeper")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// listeningRE finds the URL in serve's "storekeeper listening" log line.
var listeningRE = regexp.MustCompile(`storekeeper listening.*?\burl=(https?://\S+)`)

// scrapeServe runs the storekeeper binary's serve on a private Redis, has
// it compact and back up a store so that the cluster metrics have
// samples, and scrapes /metrics.
func scrapeServe(t *testing.T) exposed {
	t.Helper()
	bin := buildBinary(t)
	rs := redistest.Start(t)
	dir := t.TempDir()
	const token = "operator-token-for-the-deploy-test"
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--redis", rs.URL(), "--tokens", "ops:operator:"+token,
		"--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups"), "--stores", "orders,users",
		"--node", "deploytest", "--schedule-compact", "off", "--schedule-backup", "off", "--schedule-verify", "off",
		"--backup-target", "vault=file://"+filepath.Join(dir, "vault")+"?create_dir=1", "--rpo", "1h", "--rto", "1m")
	cmd.Env = os.Environ()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder // written by the reader below until the pipe closes
	lines, urls := make(chan struct{}), make(chan string, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { <-lines; exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("serve did not exit cleanly after SIGTERM: %v\n%s", err, logs.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("serve did not stop 30 s after SIGTERM")
		}
	})
	var base string
	select {
	case base = <-urls:
	case err := <-exited:
		t.Fatalf("serve exited before it listened: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not listen within 60 s")
	}

	call := func(method, path, body string) (int, map[string]any, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, nil
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return resp.StatusCode, m, raw
	}
	// Another process's state is known only by asking it: poll its API.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(60 * time.Second)
		for !cond() {
			select {
			case <-tick.C:
			case err := <-exited:
				t.Fatalf("waiting for %s, serve exited: %v", what, err)
			case <-deadline:
				t.Fatalf("waiting for %s: gave up after 60 s", what)
			}
		}
	}
	waitFor("orders to be published", func() bool { code, _, _ := call("GET", "/api/stores/orders", ""); return code == 200 })
	for _, job := range []struct{ path, body string }{{"/api/admin/compact/orders", `{"force":true}`}, {"/api/admin/backup/orders", ""}, {"/api/admin/drill/orders", ""}} {
		code, m, raw := call("POST", job.path, job.body)
		if code != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", job.path, code, raw)
		}
		id := fmt.Sprint(m["job_id"])
		waitFor("job "+id+" to finish", func() bool {
			_, m, _ := call("GET", "/api/jobs/"+id, "")
			switch m["state"] {
			case "failed", "canceled":
				t.Fatalf("job %s: %v", id, m)
			}
			return m["state"] == "succeeded"
		})
	}

	// Compacting a store this small reclaims nothing, and the gauge of
	// reclaimed bytes has samples only for compactions that did: add the
	// history entry of one, as a worker writes it.
	_, err = jobsdb.Append(t.Context(), rs.Client(t), keyspace.HistoryStream, jobs.DefaultHistoryMaxLen, jobs.HistoryEntry{
		JobID: "j-deploy-test", Kind: jobs.KindCompact, Store: "orders", Status: jobs.StatusCompacted, Trigger: jobs.TriggerManual,
		Actor: "ops", Attempts: 1, DurationMS: 1500, BytesBefore: 3 << 20, BytesAfter: 1 << 20, Node: "deploytest", At: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	// A second node that has a store of the same name holds it as lost, as
	// its heartbeat says.
	other := jobs.NodeInfo{Node: "deploytest-2", Host: "elsewhere", Instance: "i2", Stores: []string{"orders"},
		Lost: map[string]string{"orders": "deploytest"}, StartedAt: time.Now().UTC(), At: time.Now().UTC()}
	if err := jobsdb.NodeUp(t.Context(), rs.Client(t), other, time.Hour, jobs.DefaultEventsMaxLen); err != nil {
		t.Fatal(err)
	}

	var ex exposed
	waitFor("every cluster metric in /metrics", func() bool {
		code, _, raw := call("GET", "/metrics", "")
		if code != 200 {
			return false
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("/metrics does not parse: %v", err)
		}
		ex = exposed{}
		add := func(name string, labels map[string]bool, extra ...string) {
			set := maps.Clone(labels)
			for _, l := range extra {
				set[l] = true
			}
			ex[name] = set
		}
		for name, f := range families {
			labels := map[string]bool{}
			for _, m := range f.GetMetric() {
				for _, lp := range m.GetLabel() {
					labels[lp.GetName()] = true
				}
			}
			switch f.GetType().String() {
			case "HISTOGRAM":
				add(name+"_bucket", labels, "le")
				add(name+"_sum", labels)
				add(name+"_count", labels)
			case "SUMMARY":
				add(name, labels, "quantile")
				add(name+"_sum", labels)
				add(name+"_count", labels)
			default:
				add(name, labels)
			}
		}
		_, reclaimed := ex["storekeeper_compaction_reclaimed_bytes"]
		_, backups := ex["storekeeper_backup_age_seconds"]
		_, lost := ex["storekeeper_store_lost"]
		_, restorable := ex["storekeeper_store_last_restorable_timestamp_seconds"]
		return reclaimed && backups && lost && restorable
	})
	return ex
}

// Labels every scraped series gets from Prometheus (and the Kubernetes
// relabelling in prometheus-kubernetes.yml), and the series it makes itself.
var (
	targetLabels = []string{"job", "instance", "pod", "__name__"}
	builtins     = exposed{"up": {"job": true, "instance": true, "pod": true}}
)

// The alert rules and the dashboard select only series a running server
// exposes, with labels it sets.
func TestMetricNames(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server")
	}
	ex := scrapeServe(t)
	maps.Copy(ex, builtins)
	check := func(where, expr string) {
		t.Helper()
		refs, err := promqlRefs(expr)
		if err != nil {
			t.Errorf("%s: %v in %q", where, err, expr)
			return
		}
		if len(refs.metrics) == 0 {
			t.Errorf("%s: %q selects no metric", where, expr)
		}
		all := map[string]bool{}
		for _, l := range targetLabels {
			all[l] = true
		}
		for _, m := range refs.metrics {
			labels, ok := ex[m.name]
			if !ok {
				t.Errorf("%s: %s is not exposed by storekeeper", where, m.name)
				continue
			}
			maps.Copy(all, labels)
			for _, l := range m.labels {
				if !labels[l] && !slices.Contains(targetLabels, l) {
					t.Errorf("%s: %s has no label %q", where, m.name, l)
				}
			}
		}
		for _, l := range refs.grouping {
			if !all[l] {
				t.Errorf("%s: label %q is on none of the series of %q", where, l, expr)
			}
		}
	}
	for _, g := range parseRules(t).Groups {
		for _, r := range g.Rules {
			check(rulesPath+": "+r.Alert+r.Record, r.Expr)
		}
	}

	const dashPath = "deploy/grafana/storekeeper.json"
	var dash struct {
		Title, UID string
		Panels     []grafanaPanel
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(readFile(t, dashPath), &dash); err != nil {
		t.Fatalf("%s: %v", dashPath, err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("%s: want a title and a uid", dashPath)
	}
	exprs := 0
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashPath, p.Title)
			}
			for _, tg := range p.Targets {
				exprs++
				check(fmt.Sprintf("%s: panel %q", dashPath, p.Title), tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	if exprs < 10 {
		t.Errorf("%s: %d queries", dashPath, exprs)
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`).FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("%s: variable %s: %q is not label_values(metric, label)", dashPath, v.Name, v.Definition)
		} else if !ex[m[1]][m[2]] {
			t.Errorf("%s: variable %s: %s has no label %s", dashPath, v.Name, m[1], m[2])
		}
	}
}

type grafanaPanel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

// promqlUse is what an expression selects: metric names with the labels of
// their matchers, and the labels of by/without/on/ignoring/group_* clauses.
type promqlUse struct {
	metrics  []promqlSelector
	grouping []string
}

type promqlSelector struct {
	name   string
	labels []string
}

var (
	promqlAggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
	promqlGrouping = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	promqlKeywords = []string{"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "start", "end"}
)

// promqlRefs lexes a PromQL expression (with Grafana's $variables) far
// enough to find what it selects. It is no parser: promtool checks syntax.
func promqlRefs(expr string) (promqlUse, error) {
	var u promqlUse
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	i := 0
	skipSpace := func() {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
	}
	ident := func() string {
		start := i
		for i < len(expr) && isIdent(expr[i]) {
			i++
		}
		return expr[start:i]
	}
	skipString := func() error {
		q := expr[i]
		for i++; i < len(expr); i++ {
			if expr[i] == '\\' && q != '`' {
				i++
			} else if expr[i] == q {
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string")
	}
	// labelList reads ( a, b ) or { a="x", b=~"y" } and returns the names.
	labelList := func(closing byte) ([]string, error) {
		var names []string
		for i++; i < len(expr); {
			switch c := expr[i]; {
			case c == closing:
				i++
				return names, nil
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(); err != nil {
					return nil, err
				}
			case isIdentStart(c):
				names = append(names, ident())
			default:
				i++
			}
		}
		return nil, fmt.Errorf("no closing %c", closing)
	}
	for skipSpace(); i < len(expr); skipSpace() {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return u, err
			}
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(expr) && expr[i] == '{' {
				for i < len(expr) && expr[i] != '}' {
					i++
				}
				i++
			} else {
				ident()
			}
		case c >= '0' && c <= '9' || c == '.': // a number or a duration
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case c == '[': // a range or subquery: durations only
			for i < len(expr) && expr[i] != ']' {
				i++
			}
			i++
		case c == '{':
			if _, err := labelList('}'); err != nil {
				return u, err
			}
			return u, fmt.Errorf("a selector without a metric name")
		case isIdentStart(c):
			word := ident()
			skipSpace()
			next := byte(0)
			if i < len(expr) {
				next = expr[i]
			}
			switch {
			case slices.Contains(promqlGrouping, word):
				if next == '(' {
					names, err := labelList(')')
					if err != nil {
						return u, err
					}
					u.grouping = append(u.grouping, names...)
				}
			case slices.Contains(promqlAggregations, word), slices.Contains(promqlKeywords, word):
			case next == '(': // a function
			default:
				m := promqlSelector{name: word}
				if next == '{' {
					names, err := labelList('}')
					if err != nil {
						return u, err
					}
					m.labels = names
				}
				u.metrics = append(u.metrics, m)
			}
		default:
			i++
		}
	}
	return u, nil
}

func TestPromQLRefs(t *testing.T) {
	u, err := promqlRefs(`sum by (kind, le) (rate(storekeeper_x_bucket{store=~"$store", q="a}b"}[$__rate_interval] offset 5m)) / on () max(up{job="j"}) > 0.5 and 1e3`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range u.metrics {
		got = append(got, m.name+strings.Join(m.labels, ","))
	}
	if want := []string{"storekeeper_x_bucketstore,q", "upjob"}; !slices.Equal(got, want) {
		t.Errorf("metrics %q, want %q", got, want)
	}
	if want := []string{"kind", "le"}; !slices.Equal(u.grouping, want) {
		t.Errorf("grouping %q, want %q", u.grouping, want)
	}
}
