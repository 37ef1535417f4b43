package deploy

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// systemdUnit is a unit file: section → key → values in order.
type systemdUnit map[string]map[string][]string

func parseUnit(t *testing.T, file string) systemdUnit {
	t.Helper()
	u := systemdUnit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, file)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" || strings.HasSuffix(l, "\\") {
				t.Fatalf("%s: %q: want Key=Value in a section, on one line", file, l)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// parseEnvFile reads KEY=VALUE lines, as systemd's EnvironmentFile does.
func parseEnvFile(t *testing.T, file string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for l := range strings.SplitSeq(string(readFile(t, file)), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Errorf("%s: %q: want KEY=VALUE", file, l)
			continue
		}
		env[k] = strings.Trim(v, `"'`)
	}
	return env
}

func TestSystemd(t *testing.T) {
	units, _ := filepath.Glob(filepath.Join(root, "deploy/systemd/*.service"))
	examples, _ := filepath.Glob(filepath.Join(root, "deploy/systemd/*.env.example"))
	used := map[string]bool{}
	modes := map[string]bool{}
	for _, f := range units {
		rel := "deploy/systemd/" + filepath.Base(f)
		u := parseUnit(t, rel)
		svc := u["Service"]
		// A template's instance is the node name of its example env file.
		instance := ""
		if strings.Contains(filepath.Base(f), "@") {
			instance = "worker-a"
		}
		fill := func(s string) string {
			return strings.ReplaceAll(strings.ReplaceAll(s, "%i", instance), "%%", "%")
		}
		env := map[string]string{}
		for _, ef := range svc["EnvironmentFile"] {
			pattern := strings.ReplaceAll(path.Base(strings.TrimPrefix(ef, "-")), "%i", "*") + ".example"
			matches, _ := filepath.Glob(filepath.Join(root, "deploy/systemd", pattern))
			if len(matches) == 0 {
				t.Errorf("%s: EnvironmentFile=%s: no deploy/systemd/%s to show it", rel, ef, pattern)
			}
			for _, m := range matches {
				used[m] = true
				if prefix, _, ok := strings.Cut(pattern, "*"); ok {
					instance = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), prefix), ".env.example")
				}
				maps.Copy(env, parseEnvFile(t, "deploy/systemd/"+filepath.Base(m)))
			}
		}
		for _, e := range svc["Environment"] {
			for _, kv := range strings.Fields(e) {
				k, v, _ := strings.Cut(strings.Trim(kv, `"`), "=")
				env[k] = v
			}
		}
		if len(svc["ExecStart"]) != 1 {
			t.Errorf("%s: want one ExecStart=", rel)
			continue
		}
		argv := strings.Fields(strings.TrimLeft(svc["ExecStart"][0], "-@:+!"))
		if strings.ContainsAny(svc["ExecStart"][0], `"'$\`) || len(argv) < 2 || !isStorekeeper(argv[0]) {
			t.Errorf("%s: ExecStart=%s: want the binary, a mode and plain flags", rel, svc["ExecStart"][0])
			continue
		}
		for i := range argv {
			argv[i] = fill(argv[i])
		}
		l := launch{where: rel, mode: argv[1], args: argv[2:], env: env}
		c := checkLaunch(t, l)
		if c == nil {
			continue
		}
		modes[l.mode] = true
		requireTokens(t, l, c)
		for key, want := range map[string]string{"Restart": "on-failure", "KillSignal": "SIGTERM", "ProtectSystem": "strict"} {
			if got := svc[key]; len(got) != 1 || got[0] != want {
				t.Errorf("%s: %s=%q, want %s", rel, key, got, want)
			}
		}
		if len(svc["TimeoutStopSec"]) == 0 || (len(svc["User"]) == 0 && len(svc["DynamicUser"]) == 0) {
			t.Errorf("%s: want TimeoutStopSec= and User= or DynamicUser=", rel)
		}
		if l.mode != "api" {
			var writable []string
			for _, p := range svc["ReadWritePaths"] {
				writable = append(writable, strings.Fields(fill(p))...)
			}
			for _, d := range []string{c.DataDir, c.BackupDir} {
				if !slices.ContainsFunc(writable, func(w string) bool { return d == w || strings.HasPrefix(d, strings.TrimSuffix(w, "/")+"/") }) {
					t.Errorf("%s: %s is not under ReadWritePaths=%q: ProtectSystem=strict makes it read-only", rel, d, writable)
				}
			}
		}
	}
	for _, m := range examples {
		if !used[m] {
			t.Errorf("deploy/systemd/%s is read by no unit", filepath.Base(m))
		}
	}
	for _, mode := range []string{"serve", "worker"} {
		if !modes[mode] {
			t.Errorf("no systemd unit runs storekeeper %s", mode)
		}
	}
}

// systemd-analyze verify, systemd's own parser, finds what the reader
// above does not look at: unknown keys, values systemd cannot parse. The
// binary the units start is stood in by a script, since verify requires
// an executable, and a template is verified as one of its instances.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the units were not verified by systemd")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "storekeeper")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	units, _ := filepath.Glob(filepath.Join(root, "deploy/systemd/*.service"))
	if len(units) == 0 {
		t.Fatal("no deploy/systemd/*.service")
	}
	for _, f := range units {
		name := strings.Replace(filepath.Base(f), "@.", "@worker-a.", 1)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		unit := filepath.Join(dir, name)
		if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/storekeeper"), []byte(fake)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("deploy/systemd/%s: systemd-analyze verify: %v\n%s", filepath.Base(f), err, out)
		}
	}
}
