package deploy

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"storekeeper/api"
)

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

func TestCompose(t *testing.T) {
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
		if file, ok := strings.CutPrefix(c.Tokens, "@/run/secrets/"); ok {
			secret, found := cf.Secrets[file]
			if !found || !slices.ContainsFunc(svc.Secrets, func(s any) bool { return s == file }) {
				t.Errorf("%s: --tokens %s: no secret %q given to the service", where, c.Tokens, file)
			} else if _, err := api.ParseTokens("@" + filepath.Join(root, composeInterpolate(secret.File))); err != nil {
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
		n := workerNode{where: where, node: c.Node, stores: storeList(c)}
		for _, dir := range []string{c.DataDir, c.BackupDir} {
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
