package deploy

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// ruleFile is a Prometheus rules file; unknown keys fail the parse.
type ruleFile struct {
	Groups []struct {
		Name        string `yaml:"name"`
		Interval    string `yaml:"interval"`
		QueryOffset string `yaml:"query_offset"`
		Limit       int    `yaml:"limit"`
		Rules       []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

const rulesPath = "deploy/prometheus/storekeeper-rules.yml"

func parseRules(t *testing.T) ruleFile {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, rulesPath)))
	dec.KnownFields(true)
	var rf ruleFile
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	return rf
}

// The rules file is well formed, and the scrape configurations point at
// the services docker-compose.yml runs.
func TestPrometheusFiles(t *testing.T) {
	rf := parseRules(t)
	// Prometheus's template functions, enough to parse the annotations.
	funcs := template.FuncMap{}
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"title", "toUpper", "toLower", "query", "first", "value", "label", "reReplaceAll", "match", "args", "externalURL", "pathPrefix"} {
		funcs[f] = func(...any) any { return nil }
	}
	names := map[string]bool{}
	if len(rf.Groups) == 0 {
		t.Fatalf("%s: no groups", rulesPath)
	}
	for _, g := range rf.Groups {
		if g.Name == "" || names["group "+g.Name] || len(g.Rules) == 0 {
			t.Errorf("%s: group %q: want a unique name and rules", rulesPath, g.Name)
		}
		names["group "+g.Name] = true
		for _, r := range g.Rules {
			id := r.Alert + r.Record
			if (r.Alert == "") == (r.Record == "") || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: rule %q: want alert or record, and expr", rulesPath, id)
			}
			for _, d := range []string{r.For, r.KeepFiringFor, g.Interval, g.QueryOffset} {
				if _, err := model.ParseDuration(d); d != "" && err != nil {
					t.Errorf("%s: %s: %v", rulesPath, id, err)
				}
			}
			if r.Alert == "" {
				continue
			}
			if names[r.Alert] {
				t.Errorf("%s: alert %s twice", rulesPath, r.Alert)
			}
			names[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: %s: severity %q, want critical, warning or info", rulesPath, r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: %s: no summary", rulesPath, r.Alert)
			}
			for k, text := range r.Annotations {
				_, err := template.New(k).Funcs(funcs).Parse("{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}" + text)
				if err != nil {
					t.Errorf("%s: %s: annotation %s: %v", rulesPath, r.Alert, k, err)
				}
			}
		}
	}
	for _, a := range []string{"StorekeeperJobFailed", "StorekeeperBackupTooOld", "StorekeeperStoreCorrupt", "StorekeeperNodeDown"} {
		if !names[a] {
			t.Errorf("%s: no alert %s", rulesPath, a)
		}
	}

	var cf composeFile
	if err := yaml.Unmarshal(readFile(t, "docker-compose.yml"), &cf); err != nil {
		t.Fatal(err)
	}
	for _, cfgPath := range []string{"deploy/prometheus/prometheus.yml", "deploy/prometheus/prometheus-kubernetes.yml"} {
		var cfg struct {
			RuleFiles     []string `yaml:"rule_files"`
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
				KubernetesSD []any `yaml:"kubernetes_sd_configs"`
			} `yaml:"scrape_configs"`
		}
		if err := yaml.Unmarshal(readFile(t, cfgPath), &cfg); err != nil {
			t.Fatalf("%s: %v", cfgPath, err)
		}
		if !slices.ContainsFunc(cfg.RuleFiles, func(f string) bool { return filepath.Join(filepath.Dir(cfgPath), f) == filepath.FromSlash(rulesPath) }) {
			t.Errorf("%s: rule_files %q lacks %s", cfgPath, cfg.RuleFiles, filepath.Base(rulesPath))
		}
		if len(cfg.ScrapeConfigs) == 0 {
			t.Errorf("%s: no scrape_configs", cfgPath)
		}
		for _, sc := range cfg.ScrapeConfigs {
			if !strings.HasPrefix(sc.JobName, "storekeeper") {
				t.Errorf("%s: job %q: the rules select job=~\"storekeeper-.*\"", cfgPath, sc.JobName)
			}
			for _, st := range sc.StaticConfigs {
				for _, target := range st.Targets {
					host, _, _ := net.SplitHostPort(target)
					if _, ok := cf.Services[host]; !ok {
						t.Errorf("%s: target %s is not a docker-compose.yml service", cfgPath, target)
					}
				}
			}
		}
	}
}

// promtool, Prometheus's own parser, checks the rules' expressions and
// prometheus.yml and runs the rules' unit tests
// (storekeeper-rules.test.yml). Not prometheus-kubernetes.yml: Debian's
// promtool is built without Kubernetes service discovery and refuses
// kubernetes_sd_configs. Where it is not installed the test is
// skipped, unless STOREKEEPER_REQUIRE_PROMTOOL=1 (.ci/run) says it must be.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("STOREKEEPER_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool is not installed and STOREKEEPER_REQUIRE_PROMTOOL=1 (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus): the rules' unit tests did not run")
	}
	for _, args := range [][]string{{"check", "rules", "storekeeper-rules.yml"}, {"test", "rules", "storekeeper-rules.test.yml"},
		{"check", "config", "--syntax-only", "prometheus.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(root, "deploy/prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
