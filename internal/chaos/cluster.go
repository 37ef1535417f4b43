package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"storekeeper/internal/freeport"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// masterName is the Sentinel name of the Redis primary.
const masterName = "sk"

// Options shape a run.
type Options struct {
	Dir           string        // work directory (binaries, data, logs)
	Seed          int64         // the fault schedule and the load's choices
	Duration      time.Duration // of load and faults; then convergence and checks
	MinReplicas   int           // --redis-min-replicas of every node (0: report the loss window)
	Nodes         int           // worker nodes (3)
	APIs          int           // API nodes (2)
	StoresPerNode int           // 2
	Faults        []string      // the fault kinds to draw from; empty: every kind
	Log           io.Writer
}

// Cluster is the processes under test and the harness's view of them.
type Cluster struct {
	opt       Options
	bin       string // storekeeper
	nodeBin   string // chaosnode
	redisURL  string
	token     string
	redis     []*redisServer
	sentinels []*proc
	sentPorts []int
	nodes     []*node
	apis      []*apiNode
	sink      *webhookSink
	rdb       *redis.Client // the harness's own client, through the Sentinels
	// s3 is the backup target's S3 server (s3rver, from npm), nil when it
	// is not installed: the target is then a file:// directory.
	s3 *s3Server
}

type redisServer struct {
	port int
	*proc
}

type node struct {
	name    string
	stores  []string
	data    string
	tmpfs   bool // data is a size-limited tmpfs the harness mounted (the disk-full fault)
	backups string
	ledger  string
	addr    string
	*proc
}

type apiNode struct {
	name string
	addr string
	*proc
}

func (c *Cluster) logf(format string, a ...any) {
	fmt.Fprintf(c.opt.Log, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// freePort is a loopback port nobody listens on now, from outside the
// ephemeral range: the nodes' fault proxies listen on ephemeral ports and
// could otherwise take a port picked for a process not started yet.
func freePort() (int, error) { return freeport.Loopback() }

func ports(n int) ([]int, error) {
	var out []int
	for range n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// build compiles storekeeper and chaosnode into dir.
func build(ctx context.Context, dir string) (bin, nodeBin string, err error) {
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := filepath.Dir(strings.TrimSpace(string(root)))
	bin, nodeBin = filepath.Join(dir, "storekeeper"), filepath.Join(dir, "chaosnode")
	for out, pkg := range map[string]string{bin: "./cmd/storekeeper", nodeBin: "./internal/chaos/chaosnode"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = mod
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
	}
	return bin, nodeBin, nil
}

// Start builds the binaries and starts every process, then waits until
// each answers.
func Start(ctx context.Context, opt Options) (*Cluster, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("chaos needs redis-server (apt-get install redis-server): %w", err)
	}
	c := &Cluster{opt: opt, sink: newWebhookSink()}
	var err error
	if c.bin, c.nodeBin, err = build(ctx, opt.Dir); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	c.token = hex.EncodeToString(tok)
	if err := c.startRedis(); err != nil {
		return c, err
	}
	c.rdb = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: masterName, SentinelAddrs: c.sentinelAddrs(),
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	// A write, not a PING: with min-replicas-to-write the primary refuses
	// writes until its replica is in sync, and a storekeeper started
	// before that exits on its first write (a supervisor would restart it).
	if err := waitFor(ctx, 20*time.Second, "Redis through the Sentinels, writable", func() error {
		return c.rdb.Set(ctx, "chaos:started", time.Now().String(), 0).Err()
	}); err != nil {
		return c, err
	}
	if err := c.sink.start(); err != nil {
		return c, err
	}
	if err := c.startS3(ctx); err != nil {
		return c, err
	}
	if err := c.startNodes(); err != nil {
		return c, err
	}
	if err := c.startAPIs(); err != nil {
		return c, err
	}
	for _, n := range c.nodes {
		if err := awaitReady(ctx, n.proc, "http://"+n.addr+"/healthz"); err != nil {
			return c, err
		}
	}
	for _, a := range c.apis {
		if err := awaitReady(ctx, a.proc, "http://"+a.addr+"/readyz"); err != nil {
			return c, err
		}
	}
	return c, nil
}

// awaitReady polls url until it answers 200; a process that exits first
// fails at once, with the end of its log.
func awaitReady(ctx context.Context, p *proc, url string) error {
	return waitFor(ctx, 60*time.Second, p.name, func() error {
		if !p.running() {
			return giveUp{fmt.Errorf("%s exited while starting; the end of %s:\n%s", p.name, p.log, tail(p.log, 20))}
		}
		return httpOK(ctx, url)
	})
}

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (c *Cluster) sentinelAddrs() []string {
	var out []string
	for _, p := range c.sentPorts {
		out = append(out, "127.0.0.1:"+strconv.Itoa(p))
	}
	return out
}

// startRedis starts a primary, its replica and three Sentinels. AOF is on;
// with MinReplicas ≥ 1 each server refuses writes without a replica
// (min-replicas-to-write), as docs/design.md tells operators to set.
func (c *Cluster) startRedis() error {
	ps, err := ports(5)
	if err != nil {
		return err
	}
	for i := range 2 {
		dir := filepath.Join(c.opt.Dir, fmt.Sprintf("redis%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		args := []string{"redis-server", "--port", strconv.Itoa(ps[i]), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--save", "", "--protected-mode", "no", "--repl-diskless-sync", "yes",
			"--repl-diskless-sync-delay", "0"}
		if c.opt.MinReplicas > 0 {
			args = append(args, "--min-replicas-to-write", strconv.Itoa(c.opt.MinReplicas), "--min-replicas-max-lag", "10")
		}
		if i == 1 {
			args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(ps[0]))
		}
		r := &redisServer{port: ps[i], proc: &proc{name: fmt.Sprintf("redis%d", i), args: args, log: filepath.Join(dir, "redis.log")}}
		if err := r.start(); err != nil {
			return err
		}
		c.redis = append(c.redis, r)
	}
	c.sentPorts = ps[2:]
	for i, p := range c.sentPorts {
		dir := filepath.Join(c.opt.Dir, fmt.Sprintf("sentinel%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %[3]s 1500\n"+
			"sentinel failover-timeout %[3]s 6000\nsentinel parallel-syncs %[3]s 1\n", p, dir, masterName, ps[0])
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			return err
		}
		s := &proc{name: fmt.Sprintf("sentinel%d", i), args: []string{"redis-server", conf, "--sentinel"}, log: filepath.Join(dir, "sentinel.log")}
		if err := s.start(); err != nil {
			return err
		}
		c.sentinels = append(c.sentinels, s)
	}
	c.redisURL = "redis+sentinel://" + strings.Join(c.sentinelAddrs(), ",") + "/" + masterName
	return nil
}

// restartRedis starts a killed Redis server again: as a replica of the
// server the Sentinels name as primary when that is another one (it
// resyncs at once instead of waiting for a Sentinel to notice it), alone
// otherwise (it was the primary, and no failover happened yet).
func (c *Cluster) restartRedis(r *redisServer) error {
	var args []string
	for i := 0; i < len(r.args); i++ {
		if r.args[i] == "--replicaof" {
			i += 2
			continue
		}
		args = append(args, r.args[i])
	}
	if p := c.primary(context.Background()); p != nil && p != r {
		args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(p.port))
	}
	r.args = args
	return r.start()
}

// primary is the server the Sentinels name as primary now.
func (c *Cluster) primary(ctx context.Context) *redisServer {
	for _, addr := range c.sentinelAddrs() {
		s := redis.NewSentinelClient(&redis.Options{Addr: addr, DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond})
		m, err := s.GetMasterAddrByName(ctx, masterName).Result()
		s.Close()
		if err == nil && len(m) == 2 {
			for _, r := range c.redis {
				if strconv.Itoa(r.port) == m[1] {
					return r
				}
			}
		}
	}
	return nil
}

// place makes the work directory of process name and picks its HTTP
// address.
func (c *Cluster) place(name string) (dir, addr string, err error) {
	dir = filepath.Join(c.opt.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	p, err := freePort()
	if err != nil {
		return "", "", err
	}
	return dir, "127.0.0.1:" + strconv.Itoa(p), nil
}

// vault is where the backup target every node uploads to keeps its
// data: s3rver's directory, or the file:// target's when s3rver is not
// installed.
func (c *Cluster) vault() string { return filepath.Join(c.opt.Dir, "vault") }

// targetURL is the backup target's URL, for the nodes and the checker.
func (c *Cluster) targetURL() string {
	if c.s3 != nil {
		return c.s3.url()
	}
	return "file://" + c.vault()
}

func (c *Cluster) startNodes() error {
	if err := os.MkdirAll(c.vault(), 0o755); err != nil {
		return err
	}
	for i := range c.opt.Nodes {
		name := fmt.Sprintf("n%d", i+1)
		dir, addr, err := c.place(name)
		if err != nil {
			return err
		}
		n := &node{name: name, data: filepath.Join(dir, "data"), backups: filepath.Join(dir, "backups"),
			ledger: filepath.Join(dir, "ledger"), addr: addr}
		n.tmpfs = mountTmpfs(n.data, 256) == nil
		for s := range c.opt.StoresPerNode {
			n.stores = append(n.stores, fmt.Sprintf("%s-s%d", name, s+1))
		}
		n.proc = &proc{name: name, log: filepath.Join(dir, "node.log"), args: []string{c.nodeBin, "run",
			"--redis", c.redisURL, "--node", name, "--data", n.data, "--backups", n.backups,
			"--stores", strings.Join(n.stores, ","), "--ledger", n.ledger, "--listen", n.addr,
			"--seed", strconv.FormatInt(c.opt.Seed+int64(i), 10), "--min-replicas", strconv.Itoa(c.opt.MinReplicas),
			"--webhook", c.sink.url() + "#chaos-webhook-secret", "--backup-target", "vault=" + c.targetURL(), "--fast"},
			env: s3Env}
		if err := n.start(); err != nil {
			return err
		}
		c.nodes = append(c.nodes, n)
	}
	return nil
}

func (c *Cluster) startAPIs() error {
	for i := range c.opt.APIs {
		name := fmt.Sprintf("api%d", i+1)
		dir, addr, err := c.place(name)
		if err != nil {
			return err
		}
		a := &apiNode{name: name, addr: addr}
		a.proc = &proc{name: name, log: filepath.Join(dir, "api.log"), args: []string{c.bin, "api",
			"--redis", c.redisURL, "--listen", a.addr, "--tokens", "chaos:operator:" + c.token,
			"--redis-min-replicas", strconv.Itoa(c.opt.MinReplicas)}}
		if err := a.start(); err != nil {
			return err
		}
		c.apis = append(c.apis, a)
	}
	return nil
}

// stores lists every store of the cluster with its node.
func (c *Cluster) stores() map[string]*node {
	out := map[string]*node{}
	for _, n := range c.nodes {
		for _, s := range n.stores {
			out[s] = n
		}
	}
	return out
}

// Close stops every process (gracefully where it can).
func (c *Cluster) Close() {
	for _, a := range c.apis {
		_ = a.stop(10 * time.Second)
	}
	for _, n := range c.nodes {
		_ = n.stop(30 * time.Second)
	}
	if c.rdb != nil {
		c.rdb.Close()
	}
	for _, s := range c.sentinels {
		_ = s.stop(5 * time.Second)
	}
	for _, r := range c.redis {
		_ = r.stop(5 * time.Second)
	}
	c.sink.stop()
	if c.s3 != nil {
		_ = c.s3.stop(5 * time.Second)
	}
	for _, n := range c.nodes {
		if n.tmpfs && !n.running() {
			_ = exec.Command("umount", n.data).Run()
		}
	}
}

// mountTmpfs mounts a tmpfs of sizeMB at dir, for the disk-full fault: it
// needs root (CAP_SYS_ADMIN); without it the fault is not drawn.
func mountTmpfs(dir string, sizeMB int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMB), "tmpfs", dir).Run()
}

// giveUp is an error after which waitFor stops polling.
type giveUp struct{ error }

// waitFor polls fn until it returns nil or a giveUp, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var g giveUp
		if errors.As(err, &g) {
			return g.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var quick = &http.Client{Timeout: 2 * time.Second}

func httpOK(ctx context.Context, url string) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := quick.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return nil
}

// postForm POSTs form v to url and wants a 200.
func postForm(ctx context.Context, target string, v url.Values) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", target, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := quick.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %d %s", target, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}
