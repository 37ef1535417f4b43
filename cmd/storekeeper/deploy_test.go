package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"storekeeper/api"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// The deployment files (docker-compose.yml and deploy/) are checked against
// the binary: every flag and STOREKEEPER_* variable they name exists for the
// command they run and takes the value given, the values pass the binary's
// own validation, the API never listens beyond loopback without tokens,
// worker nodes own disjoint stores on volumes of their own, and the alert
// rules and the dashboard select only metrics a running server exposes.

// deployRoot is the repository root, seen from this package's directory.
const deployRoot = "../.."

// A launch is one way a deployment file starts storekeeper.
type launch struct {
	where string            // file and place, for messages
	mode  string            // serve, api or worker
	args  []string          // after the mode, placeholders filled in
	env   map[string]string // variables the file sets, placeholders filled in
	image map[string]string // variables inherited from the image's ENV
}

// checkLaunch parses the launch with the binary's own flag set and
// configuration checks, and returns the configuration it would run with.
func checkLaunch(t *testing.T, l launch) *serveConfig {
	t.Helper()
	if l.mode != "serve" && l.mode != "api" && l.mode != "worker" {
		t.Errorf("%s: storekeeper %q: not serve, api or worker", l.where, l.mode)
		return nil
	}
	fs, c := serveFlags(l.mode, io.Discard)
	if err := fs.Parse(l.args); err != nil {
		t.Errorf("%s: storekeeper %s %s: %v", l.where, l.mode, strings.Join(l.args, " "), err)
		return nil
	}
	if fs.NArg() > 0 {
		t.Errorf("%s: storekeeper %s: stray arguments %q", l.where, l.mode, fs.Args())
	}
	byEnv := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) { byEnv[envName(f.Name)] = f })
	for _, name := range slices.Sorted(maps.Keys(l.env)) {
		if strings.HasPrefix(name, "STOREKEEPER_") && byEnv[name] == nil {
			t.Errorf("%s: %s is not a variable of storekeeper %s", l.where, name, l.mode)
		}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	env := maps.Clone(l.image)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, l.env)
	for _, name := range slices.Sorted(maps.Keys(env)) {
		f := byEnv[name]
		if f == nil || given[f.Name] {
			continue
		}
		vals := []string{env[name]}
		if f.Name == "webhook" {
			vals = strings.Fields(env[name])
		}
		for _, v := range vals {
			if err := f.Value.Set(v); err != nil {
				t.Errorf("%s: %s=%q: %v", l.where, name, v, err)
			}
		}
	}
	log := slog.New(slog.DiscardHandler)
	if l.mode != "api" {
		if _, err := storeConfig(c, log); err != nil {
			t.Errorf("%s: %v", l.where, err)
		}
		if _, err := workerConfig(c, log); err != nil {
			t.Errorf("%s: %v", l.where, err)
		}
	}
	if l.mode != "serve" && c.redisURL == "" {
		t.Errorf("%s: storekeeper %s without --redis: it refuses to start", l.where, l.mode)
	}
	if c.listen != "" {
		if _, _, err := net.SplitHostPort(c.listen); err != nil {
			t.Errorf("%s: --listen %q: %v", l.where, c.listen, err)
		}
	}
	return c
}

// requireTokens fails a launch whose API would refuse to start for want of
// tokens.
func requireTokens(t *testing.T, l launch, c *serveConfig) {
	t.Helper()
	if c != nil && l.mode != "worker" && c.tokens == "" && !loopback(c.listen) {
		t.Errorf("%s: storekeeper %s listens on %s without --tokens: it refuses to start", l.where, l.mode, c.listen)
	}
}

// listenPort is the port of --listen.
func listenPort(c *serveConfig) string {
	_, port, _ := net.SplitHostPort(c.listen)
	return port
}

// workerNode is what deployments must keep apart between worker nodes.
type workerNode struct {
	where, node string
	stores      []string
	volumes     []string // where the data and backup directories live
}

// checkNodes fails nodes that share a name, a store or a volume.
func checkNodes(t *testing.T, nodes []workerNode) {
	t.Helper()
	names, stores, volumes := map[string]string{}, map[string]string{}, map[string]string{}
	for _, n := range nodes {
		if other, ok := names[n.node]; ok {
			t.Errorf("%s and %s both run node %q", other, n.where, n.node)
		}
		names[n.node] = n.where
		for _, s := range n.stores {
			if other, ok := stores[s]; ok {
				t.Errorf("%s and %s both own store %q: the second node would refuse to start", other, n.where, s)
			}
			stores[s] = n.where
		}
		for _, v := range n.volumes {
			if other, ok := volumes[v]; ok {
				t.Errorf("%s and %s share volume %q", other, n.where, v)
			}
			volumes[v] = n.where
		}
	}
	if len(nodes) < 2 {
		t.Errorf("%d worker nodes; the deployment shows two", len(nodes))
	}
}

func storeList(c *serveConfig) []string {
	var out []string
	for s := range strings.SplitSeq(c.stores, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dockerImage is what the final stage of deploy/Dockerfile sets.
type dockerImage struct {
	entrypoint, cmd []string
	env             map[string]string
	user            string
	expose          []string
}

func parseDockerfile(t *testing.T) dockerImage {
	t.Helper()
	var lines []string
	cont := ""
	for l := range strings.SplitSeq(string(readFile(t, "deploy/Dockerfile")), "\n") {
		l = strings.TrimSpace(l)
		if cont == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cont += s + " "
			continue
		}
		lines = append(lines, cont+l)
		cont = ""
	}
	var img dockerImage
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM": // a new stage: only the last one counts
			img = dockerImage{env: map[string]string{}}
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				t.Fatalf("deploy/Dockerfile: %s %s: want the exec (JSON) form: %v", instr, rest, err)
			}
			if strings.EqualFold(instr, "CMD") {
				img.cmd = v
			} else {
				img.entrypoint = v
			}
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("deploy/Dockerfile: ENV %s: want KEY=VALUE", rest)
				}
				img.env[k] = strings.Trim(v, `"`)
			}
		case "USER":
			img.user = rest
		case "EXPOSE":
			img.expose = strings.Fields(rest)
		}
	}
	return img
}

// isStorekeeper tells whether argv[0] of a command is the binary.
func isStorekeeper(bin string) bool { return path.Base(bin) == "storekeeper" }

func TestDeployDockerfile(t *testing.T) {
	img := parseDockerfile(t)
	if len(img.entrypoint) != 1 || !isStorekeeper(img.entrypoint[0]) {
		t.Fatalf("deploy/Dockerfile: ENTRYPOINT %q: want the binary alone", img.entrypoint)
	}
	if len(img.cmd) == 0 {
		t.Fatal("deploy/Dockerfile: no CMD")
	}
	l := launch{where: "deploy/Dockerfile", mode: img.cmd[0], args: img.cmd[1:], env: img.env}
	c := checkLaunch(t, l)
	if c != nil && !slices.Contains(img.expose, listenPort(c)) {
		t.Errorf("deploy/Dockerfile: EXPOSE %q, but storekeeper listens on %s", img.expose, c.listen)
	}
	if u, _, _ := strings.Cut(img.user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("deploy/Dockerfile: USER %q: want a non-root user", img.user)
	}
}

// composeInterpolate fills in ${VAR:-default}, ${VAR-default} and ${VAR}
// the way Compose does with VAR unset, and $$.
func composeInterpolate(s string) string {
	s = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}`).ReplaceAllString(s, "$1")
	return strings.ReplaceAll(s, "$$", "$")
}

// stringList reads a Compose field that is a list or one string.
func stringList(v any) []string {
	switch v := v.(type) {
	case nil:
		return nil
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = fmt.Sprint(x)
		}
		return out
	}
	return []string{fmt.Sprint(v)}
}

type composeFile struct {
	Services map[string]struct {
		Image       string `yaml:"image"`
		Build       any    `yaml:"build"`
		Command     any    `yaml:"command"`
		Entrypoint  any    `yaml:"entrypoint"`
		Environment any    `yaml:"environment"`
		Secrets     []any  `yaml:"secrets"`
		Volumes     []any  `yaml:"volumes"`
		Profiles    []string
	} `yaml:"services"`
	Secrets map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

func TestDeployCompose(t *testing.T) {
	var cf composeFile
	if err := yaml.Unmarshal(readFile(t, "docker-compose.yml"), &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	img := parseDockerfile(t)
	var nodes []workerNode
	for _, name := range slices.Sorted(maps.Keys(cf.Services)) {
		svc := cf.Services[name]
		where := "docker-compose.yml: services." + name
		build, _ := svc.Build.(map[string]any)
		if svc.Image != "storekeeper" && !strings.HasPrefix(svc.Image, "storekeeper:") && build["dockerfile"] != "deploy/Dockerfile" {
			continue
		}
		if svc.Entrypoint != nil {
			t.Errorf("%s: sets entrypoint; the test expects the image's", where)
			continue
		}
		argv := stringList(svc.Command)
		if argv == nil {
			argv = img.cmd
		}
		for i := range argv {
			argv[i] = composeInterpolate(argv[i])
		}
		env := map[string]string{}
		switch e := svc.Environment.(type) {
		case map[string]any:
			for k, v := range e {
				env[k] = composeInterpolate(fmt.Sprint(v))
			}
		case []any:
			for _, kv := range e {
				k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
				env[k] = composeInterpolate(v)
			}
		}
		l := launch{where: where, mode: argv[0], args: argv[1:], env: env, image: img.env}
		c := checkLaunch(t, l)
		if c == nil {
			continue
		}
		requireTokens(t, l, c)
		if file, ok := strings.CutPrefix(c.tokens, "@/run/secrets/"); ok {
			secret, found := cf.Secrets[file]
			if !found || !slices.ContainsFunc(svc.Secrets, func(s any) bool { return s == file }) {
				t.Errorf("%s: --tokens %s: no secret %q given to the service", where, c.tokens, file)
			} else if _, err := api.ParseTokens("@" + filepath.Join(deployRoot, composeInterpolate(secret.File))); err != nil {
				t.Errorf("%s: the tokens in %s: %v", where, secret.File, err)
			}
		}
		if l.mode == "api" {
			continue
		}
		mounts := map[string]string{} // container path → named volume
		for _, v := range svc.Volumes {
			switch v := v.(type) {
			case string:
				parts := strings.Split(v, ":")
				if len(parts) >= 2 {
					mounts[parts[1]] = parts[0]
				}
			case map[string]any:
				mounts[fmt.Sprint(v["target"])] = fmt.Sprint(v["source"])
			}
		}
		n := workerNode{where: where, node: c.node, stores: storeList(c)}
		for _, dir := range []string{c.dataDir, c.backupDir} {
			vol, ok := mounts[dir]
			if _, named := cf.Volumes[vol]; !ok || !named {
				t.Errorf("%s: %s is not on a named volume: it would be lost with the container", where, dir)
			}
			n.volumes = append(n.volumes, vol)
		}
		nodes = append(nodes, n)
	}
	checkNodes(t, nodes)
}

// k8s objects, as far as the checks read them.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas             *int       `yaml:"replicas"`
		VolumeClaimTemplates []k8sClaim `yaml:"volumeClaimTemplates"`
		Template             struct {
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

type k8sClaim struct {
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
}

type k8sPodSpec struct {
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	EnvFrom []any    `yaml:"envFrom"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name     string `yaml:"name"`
				Key      string `yaml:"key"`
				Optional bool   `yaml:"optional"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
}

func TestDeployKubernetes(t *testing.T) {
	dir := filepath.Join(deployRoot, "deploy/kubernetes")
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no deploy/kubernetes/*.yaml")
	}
	type located struct {
		where string
		obj   k8sObject
	}
	var objs []located
	var resources []string
	for _, f := range files {
		rel := "deploy/kubernetes/" + filepath.Base(f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			var k struct {
				Resources []string `yaml:"resources"`
			}
			if err := yaml.Unmarshal(b, &k); err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			resources = k.Resources
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var o k8sObject
			err := dec.Decode(&o)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", rel, i, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: document %d has no kind or name", rel, i)
			}
			objs = append(objs, located{fmt.Sprintf("%s: %s %s", rel, o.Kind, o.Metadata.Name), o})
		}
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(resources, base) {
			t.Errorf("deploy/kubernetes/%s is not in kustomization.yaml's resources", base)
		}
	}
	for _, r := range resources {
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("kustomization.yaml: resource %s: %v", r, err)
		}
	}

	secrets := map[string]map[string]bool{}
	for _, o := range objs {
		if o.obj.Kind == "Secret" {
			keys := map[string]bool{}
			for k := range o.obj.StringData {
				keys[k] = true
			}
			for k := range o.obj.Data {
				keys[k] = true
			}
			secrets[o.obj.Metadata.Name] = keys
		}
	}
	img := parseDockerfile(t)
	var nodes []workerNode
	var modes []string
	for _, o := range objs {
		if o.obj.Kind != "Deployment" && o.obj.Kind != "StatefulSet" {
			continue
		}
		pod := o.obj.Spec.Template.Spec
		podName := o.obj.Metadata.Name + "-0"
		if o.obj.Kind == "Deployment" {
			podName = o.obj.Metadata.Name + "-5d4f8b6c7-x2x7q"
		}
		for _, ctr := range pod.Containers {
			where := o.where + " container " + ctr.Name
			// Variables: $(VAR) must name one defined before it.
			vars := map[string]string{}
			expand := func(s string) string {
				return regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(m string) string {
					v, ok := vars[m[2:len(m)-1]]
					if !ok {
						t.Errorf("%s: %s names a variable not defined before it", where, m)
					}
					return v
				})
			}
			env := map[string]string{}
			for _, e := range ctr.Env {
				v := expand(e.Value)
				if vf := e.ValueFrom; vf != nil {
					switch {
					case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.name":
						v = podName
					case vf.FieldRef != nil:
						v = "field-" + vf.FieldRef.FieldPath
					case vf.SecretKeyRef != nil:
						ref := vf.SecretKeyRef
						if !secrets[ref.Name][ref.Key] && !ref.Optional {
							t.Errorf("%s: env %s: no key %q in a Secret %q of these manifests", where, e.Name, ref.Key, ref.Name)
						}
						v = "secret-" + ref.Key
						if e.Name == "STOREKEEPER_WEBHOOK" {
							v = "https://hooks.example.com/x#secret"
						}
					}
				}
				vars[e.Name], env[e.Name] = v, v
			}
			argv := slices.Concat(ctr.Command, ctr.Args)
			if len(ctr.Command) == 0 {
				argv = slices.Concat(img.entrypoint, ctr.Args)
				if len(ctr.Args) == 0 {
					argv = slices.Concat(img.entrypoint, img.cmd)
				}
			}
			for i := range argv {
				argv[i] = expand(argv[i])
			}
			if !strings.HasPrefix(path.Base(ctr.Image), "storekeeper") {
				continue
			}
			if len(argv) < 2 || !isStorekeeper(argv[0]) {
				t.Errorf("%s: runs %q: want storekeeper and a mode", where, argv)
				continue
			}
			if len(ctr.EnvFrom) > 0 {
				t.Errorf("%s: envFrom: this test cannot check the variables it sets", where)
			}
			l := launch{where: where, mode: argv[1], args: argv[2:], env: env, image: img.env}
			c := checkLaunch(t, l)
			if c == nil {
				continue
			}
			modes = append(modes, l.mode)
			requireTokens(t, l, c)
			mounts := map[string]string{} // mount path → volume name
			for _, m := range ctr.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}
			if file, ok := strings.CutPrefix(c.tokens, "@"); ok {
				found := false
				for _, v := range pod.Volumes {
					if v.Secret == nil || mounts[path.Dir(file)] != v.Name {
						continue
					}
					keys := secrets[v.Secret.SecretName]
					if len(v.Secret.Items) == 0 {
						found = keys[path.Base(file)]
					}
					for _, it := range v.Secret.Items {
						found = found || (it.Path == path.Base(file) && keys[it.Key])
					}
				}
				if !found {
					t.Errorf("%s: --tokens %s: no key of a Secret is mounted there", where, c.tokens)
				}
			}
			ports := map[string]int{}
			for _, p := range ctr.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for _, p := range []struct {
				name, path string
				probe      *k8sProbe
			}{{"livenessProbe", "/healthz", ctr.LivenessProbe}, {"readinessProbe", "/readyz", ctr.ReadinessProbe}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s: %s: want an httpGet of %s", where, p.name, p.path)
					continue
				}
				port := fmt.Sprint(p.probe.HTTPGet.Port)
				if n, ok := ports[port]; ok {
					port = strconv.Itoa(n)
				}
				if port != listenPort(c) {
					t.Errorf("%s: %s on port %s, but storekeeper listens on %s", where, p.name, port, c.listen)
				}
			}
			if l.mode == "api" {
				continue
			}
			if o.obj.Kind != "StatefulSet" || o.obj.Spec.Replicas == nil || *o.obj.Spec.Replicas != 1 {
				t.Errorf("%s: a worker owns its data dir alone: want a StatefulSet with replicas: 1", where)
			}
			n := workerNode{where: where, node: c.node, stores: storeList(c)}
			for _, d := range []string{c.dataDir, c.backupDir} {
				vol, ok := mounts[d]
				if !ok || !slices.ContainsFunc(o.obj.Spec.VolumeClaimTemplates, func(v k8sClaim) bool { return v.Metadata.Name == vol }) {
					t.Errorf("%s: %s is not on a volume from a volumeClaimTemplate", where, d)
				}
				n.volumes = append(n.volumes, o.obj.Metadata.Name+"/"+vol)
			}
			nodes = append(nodes, n)
		}
	}
	if !slices.Contains(modes, "api") || !slices.Contains(modes, "worker") {
		t.Errorf("storekeeper modes run: %q; want api and worker", modes)
	}
	checkNodes(t, nodes)
}

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

func TestDeploySystemd(t *testing.T) {
	units, _ := filepath.Glob(filepath.Join(deployRoot, "deploy/systemd/*.service"))
	examples, _ := filepath.Glob(filepath.Join(deployRoot, "deploy/systemd/*.env.example"))
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
			matches, _ := filepath.Glob(filepath.Join(deployRoot, "deploy/systemd", pattern))
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
			for _, d := range []string{c.dataDir, c.backupDir} {
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
func TestDeployPrometheusFiles(t *testing.T) {
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

	// promtool, where it is installed, checks the expressions and runs the
	// rules' unit tests; with STOREKEEPER_REQUIRE_PROMTOOL=1 (.ci/run) it
	// must be.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("STOREKEEPER_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool is not installed and STOREKEEPER_REQUIRE_PROMTOOL=1 (apt-get install prometheus)")
		}
		t.Log("promtool not installed: the rules' unit tests (deploy/prometheus/storekeeper-rules.test.yml) did not run")
		return
	}
	for _, args := range [][]string{{"check", "rules", "storekeeper-rules.yml"}, {"test", "rules", "storekeeper-rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(deployRoot, "deploy/prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exposed is what a server's /metrics offers: series name → label names.
type exposed map[string]map[string]bool

// scrapeServe runs storekeeper serve in this process on a private Redis,
// has it compact and back up a store so that the cluster metrics have
// samples, and scrapes /metrics.
func scrapeServe(t *testing.T) exposed {
	t.Helper()
	rs := redistest.Start(t)
	root := t.TempDir()
	dataDir, backupDir := filepath.Join(root, "data"), filepath.Join(root, "backups")
	const token = "operator-token-for-the-deploy-test"
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	logPath := filepath.Join(root, "serve.log")
	logs, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- run(ctx, []string{"serve", "--listen", listenAddr, "--redis", rs.URL(), "--tokens", "ops:operator:" + token,
			"--data-dir", dataDir, "--backup-dir", backupDir, "--stores", "orders,users", "--node", "deploytest",
			"--schedule-compact", "off", "--schedule-backup", "off", "--schedule-verify", "off"}, io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop 30 s after its context was canceled")
		}
		logs.Close()
	})

	base := listening(t, func() string { b, _ := os.ReadFile(logPath); return string(b) }, nil)
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
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(logPath)
				t.Fatalf("waiting for %s\nserve's log:\n%s", what, log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("orders to be published", func() bool { code, _, _ := call("GET", "/api/stores/orders", ""); return code == 200 })
	for _, job := range []struct{ path, body string }{{"/api/admin/compact/orders", `{"force":true}`}, {"/api/admin/backup/orders", ""}} {
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
	_, err = jobs.Append(t.Context(), rs.Client(t), jobs.HistoryStream, jobs.DefaultHistoryMaxLen, jobs.HistoryEntry{
		JobID: "j-deploy-test", Kind: jobs.KindCompact, Store: "orders", Status: jobs.StatusCompacted, Trigger: jobs.TriggerManual,
		Actor: "ops", Attempts: 1, DurationMS: 1500, BytesBefore: 3 << 20, BytesAfter: 1 << 20, Node: "deploytest", At: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	// A second node that has a store of the same name holds it as lost, as
	// its heartbeat says.
	other := jobs.NodeInfo{Node: "deploytest-2", Host: "elsewhere", Instance: "i2", Stores: []string{"orders"},
		Lost: map[string]string{"orders": "deploytest"}, StartedAt: time.Now().UTC(), At: time.Now().UTC()}
	if err := jobs.NodeUp(t.Context(), rs.Client(t), other, time.Hour, jobs.DefaultEventsMaxLen); err != nil {
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
		return reclaimed && backups && lost
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
func TestDeployMetricNames(t *testing.T) {
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

func TestDeployPromQLRefs(t *testing.T) {
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
