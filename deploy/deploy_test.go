// The deployment files (docker-compose.yml and deploy/) are checked against
// the binary: every flag and STOREKEEPER_* variable they name exists for the
// command they run and takes the value given, the values pass the binary's
// own validation (internal/config, which the binary parses its flags with),
// the API never listens beyond loopback without tokens, worker nodes own
// disjoint stores on volumes of their own, and the alert rules and the
// dashboard select only metrics a running server exposes. One file per
// target: dockerfile_test.go, compose_test.go, kubernetes_test.go,
// systemd_test.go, prometheus_test.go, metrics_test.go.
package deploy

import (
	"flag"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"storekeeper/internal/config"
)

// root is the repository root, seen from this directory.
const root = ".."

// A launch is one way a deployment file starts storekeeper.
type launch struct {
	where string            // file and place, for messages
	mode  string            // serve, api or worker
	args  []string          // after the mode, placeholders filled in
	env   map[string]string // variables the file sets, placeholders filled in
	image map[string]string // variables inherited from the image's ENV
}

// checkLaunch parses the launch with the binary's own flags and checks,
// and returns the configuration it would run with.
func checkLaunch(t *testing.T, l launch) *config.Config {
	t.Helper()
	if !slices.Contains(config.Modes, l.mode) {
		t.Errorf("%s: storekeeper %q: not serve, api or worker", l.where, l.mode)
		return nil
	}
	fs, _ := config.NewFlagSet(l.mode, io.Discard)
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[config.EnvName(f.Name)] = true })
	for _, name := range slices.Sorted(maps.Keys(l.env)) {
		if strings.HasPrefix(name, "STOREKEEPER_") && !known[name] {
			t.Errorf("%s: %s is not a variable of storekeeper %s", l.where, name, l.mode)
		}
	}
	env := maps.Clone(l.image)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, l.env)
	c, err := config.Parse(l.mode, l.args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Errorf("%s: storekeeper %s %s: %v", l.where, l.mode, strings.Join(l.args, " "), err)
		return nil
	}
	if len(c.Args) > 0 {
		t.Errorf("%s: storekeeper %s: stray arguments %q", l.where, l.mode, c.Args)
	}
	// A token file is read where the deployment mounts it (each test
	// checks it there), and a launch without tokens is requireTokens'
	// business: stand in one token for both.
	check := *c
	if check.Tokens == "" || strings.HasPrefix(check.Tokens, "@") {
		check.Tokens = "deploy-test:operator:0123456789abcdef0123456789"
	}
	if _, err := check.Setup(slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("%s: storekeeper %s: %v", l.where, l.mode, err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		t.Errorf("%s: --listen %q: %v", l.where, c.Listen, err)
	}
	return c
}

// requireTokens fails a launch whose API would refuse to start for want of
// tokens (it serves loopback only without them).
func requireTokens(t *testing.T, l launch, c *config.Config) {
	t.Helper()
	if c == nil || l.mode == "worker" || c.Tokens != "" {
		return
	}
	if _, err := c.Setup(slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("%s: storekeeper %s without --tokens refuses to start: %v", l.where, l.mode, err)
	}
}

// listenPort is the port of --listen.
func listenPort(c *config.Config) string {
	_, port, _ := net.SplitHostPort(c.Listen)
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

func storeList(c *config.Config) []string {
	var out []string
	for s := range strings.SplitSeq(c.Stores, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// readFile reads a file given relative to the repository root.
func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// isStorekeeper tells whether argv[0] of a command is the binary.
func isStorekeeper(bin string) bool { return path.Base(bin) == "storekeeper" }
