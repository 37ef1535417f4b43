package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"storekeeper/internal/syncbuf"
	"storekeeper/internal/testsignal"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/config"
	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
)

// --help lists every flag with its variable, for each mode.
func TestHelpListsEveryFlag(t *testing.T) {
	for _, mode := range []string{"serve", "api", "worker"} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), []string{mode, "--help"}, &stdout, &stderr); code != 0 {
			t.Fatalf("%s --help: exit %d: %s", mode, code, stderr.String())
		}
		fs, _ := config.NewFlagSet(mode, io.Discard)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(stderr.String(), "-"+f.Name) || !strings.Contains(stderr.String(), config.EnvName(f.Name)) {
				t.Errorf("%s --help lacks --%s or %s", mode, f.Name, config.EnvName(f.Name))
			}
		})
	}
}

// Invalid configuration stops the process with one line naming the flag,
// before anything is opened.
func TestInvalidConfiguration(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		env  string
		flag string
	}{
		{[]string{"serve", "--tokens", "ann:admin:0123456789abcdef"}, "", "--tokens"},
		{[]string{"serve", "--tokens", "ann:viewer:short"}, "", "--tokens"},
		{[]string{"serve", "--listen", "0.0.0.0:0"}, "", "--listen"},
		{[]string{"serve", "--schedule-compact", "every day"}, "", "--schedule-compact"},
		{[]string{"serve", "--auto-restore", "maybe"}, "", "--auto-restore"},
		{[]string{"serve", "--auto-restore-limit", "0"}, "", "--auto-restore-limit"},
		{[]string{"serve", "--backup-retention", "last=seven"}, "", "--backup-retention"},
		{[]string{"serve", "--webhook", "https://example.com/hook"}, "", "--webhook"},
		{[]string{"serve", "--stores", "Orders!"}, "", "--stores"},
		{[]string{"serve", "--node", "a b"}, "", "--node"},
		{[]string{"serve", "--lease-ttl", "1s"}, "", "--lease-ttl"},
		{[]string{"serve", "--redis", "http://x"}, "", "--redis"},
		{[]string{"serve", "--tls-cert", "c.pem"}, "", "--tls-cert"},
		{[]string{"serve"}, "STOREKEEPER_SCHEDULE_VERIFY=sometimes", "--schedule-verify"},
		{[]string{"serve", "--log-format", "xml"}, "", "--log-format"},
		{[]string{"worker"}, "", "--redis"},
		{[]string{"serve", "--push-subscriber", "ops@example.com"}, "", "--push-subscriber"},
		{[]string{"serve", "--public-url", "ftp://example.com"}, "", "--public-url"},
		{[]string{"serve", "--allowed-origins", "example.com"}, "", "--allowed-origins"},
		{[]string{"serve", "--trusted-proxies", "10.0.0.0/33"}, "", "--trusted-proxies"},
		{[]string{"serve", "--metrics-token", "short"}, "", "--metrics-token"},
		{[]string{"worker", "--redis", "redis://127.0.0.1:1/0", "--metrics-token", "short"}, "", "--metrics-token"},
		{[]string{"serve", "--push-subscriptions-per-token", "0"}, "", "--push-subscriptions-per-token"},
		{[]string{"serve", "--push-subscriptions-per-token", "-1"}, "", "--push-subscriptions-per-token"},
		{[]string{"serve", "--concurrency", "0"}, "", "--concurrency"},
		{[]string{"serve", "--concurrency", "-1"}, "", "--concurrency"},
		{[]string{"worker", "--redis", "redis://127.0.0.1:1/0", "--concurrency", "-1"}, "", "--concurrency"},
		{[]string{"serve"}, "STOREKEEPER_CONCURRENCY=-2", "--concurrency"},
		{[]string{"serve", "--lease-ttl", "0s"}, "", "--lease-ttl"},
		{[]string{"serve", "--node", ""}, "", "--node"},
		{[]string{"serve", "--auto-restore", ""}, "", "--auto-restore"},
		{[]string{"serve", "--auto-restore-limit", "-1"}, "", "--auto-restore-limit"},
		{[]string{"serve", "--shutdown-timeout", "0s"}, "", "--shutdown-timeout"},
		{[]string{"serve", "--webhook", "ftp://example.com/hook#secret"}, "", "--webhook"},
		{[]string{"serve"}, "STOREKEEPER_CONCURRENCY=many", "--concurrency"},
	} {
		if c.env != "" {
			k, v, _ := strings.Cut(c.env, "=")
			t.Setenv(k, v)
		}
		args := append(c.args, "--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups"))
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.flag) {
			t.Errorf("%v %s: exit %d, stderr %q; want exit 2 and one line naming %s", c.args, c.env, code, stderr.String(), c.flag)
		}
		if c.env != "" {
			k, _, _ := strings.Cut(c.env, "=")
			os.Unsetenv(k)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("a data dir was created before the configuration was checked")
	}
}

// A configuration error names the flag and never prints a secret: not
// the password of a --redis URL that does not parse, not any part of a
// --tokens entry after its name.
func TestConfigErrorsHideSecrets(t *testing.T) {
	dir := t.TempDir()
	const secret = "S3cretPW"
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"serve", "--redis", "redis://:" + secret + "@ho st/0"}, "--redis"},
		{[]string{"serve", "--redis", "redis://user:" + secret + "@host:6379/notadb"}, "--redis"},
		{[]string{"serve", "--redis", "redis+sentinel://:" + secret + "@host:26379"}, "--redis"},
		{[]string{"serve", "--tokens", "ann:" + secret + ":tail0123456789abcdef"}, "--tokens"},       // no role: the secret would be read as one
		{[]string{"serve", "--tokens", "ann:operator:" + secret}, "--tokens"},                        // too short
		{[]string{"serve", "--tokens", secret + "-whole-entry-without-colons"}, "--tokens"},          // no name, no role
		{[]string{"serve", "--tokens", "ann:viewer:0123456789abcdef,:" + secret + "xx"}, "--tokens"}, // no name
	} {
		args := append(c.args, "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups"))
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if code != 2 || !strings.Contains(out, c.flag) {
			t.Errorf("%v: exit %d, %q; want exit 2 naming %s", c.args, code, out, c.flag)
		}
		if strings.Contains(out, secret) || strings.Contains(out, "3cretP") {
			t.Errorf("%v: the error shows the secret: %q", c.args, out)
		}
	}
}

// A --listen address already taken stops the process before it touches
// Redis or the stores: no store claimed, no node announced (it would read
// up, then down when its heartbeat expired), no data dir created.
func TestListenAddressTaken(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	rs := redistest.Start(t)
	dir := t.TempDir()
	for _, mode := range []string{"worker", "serve"} {
		args := []string{mode, "--listen", held.Addr().String(), "--redis", rs.URL(), "--node", "n1", "--stores", "alpha",
			"--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups")}
		if mode == "serve" {
			args = append(args, "--tokens", "ops:operator:operator-token-0123456789")
		}
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "--listen") || !strings.Contains(lines[0], "address already in use") {
			t.Errorf("%s on a taken port: exit %d, stderr %q; want exit 2 and one line naming --listen", mode, code, stderr.String())
		}
		if keys, err := rs.Client(t).Keys(t.Context(), "*").Result(); err != nil || len(keys) != 0 {
			t.Errorf("%s on a taken port wrote to Redis: %v %v", mode, keys, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
			t.Errorf("%s on a taken port created its data dir", mode)
		}
	}
}

// The built binary: serve on a private Redis with two stores, watched over
// WebSocket; a compaction, a backup and a restore through the API; a clean
// exit on SIGTERM.
func TestServeBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	rs := redistest.Start(t)
	dir := t.TempDir()
	const token = "operator-token-for-the-binary-test"
	srv := startProcess(t, bin, "serve", []string{"STOREKEEPER_TOKENS=ops:operator:" + token}, "serve", "--redis", rs.URL(), "--stores", "orders,users",
		"--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups"), "--node", "bb",
		"--schedule-compact", "off", "--schedule-backup", "off", "--schedule-verify", "off", "--log-format", "json")
	srv.waitReady(t)
	addr, base := srv.addr, "http://"+srv.addr
	call := func(method, path string) map[string]any {
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, m)
		}
		return m
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?store=orders", http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pushtest.WaitLive(t, ws) // subscribed: every event from here on reaches it
	waitEvent := func(typ, job string) map[string]any {
		for {
			_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
			var m map[string]any
			if err := ws.ReadJSON(&m); err != nil {
				t.Fatalf("waiting for %s of %s: %v", typ, job, err) // the cleanup prints the logs
			}
			if m["type"] == typ && (job == "" || m["job_id"] == job) {
				return m
			}
		}
	}
	compact := call("POST", "/api/admin/compact/orders")
	waitEvent("job.succeeded", compact["job_id"].(string))
	backup := call("POST", "/api/admin/backup/orders")
	waitEvent("job.succeeded", backup["job_id"].(string))
	restore := call("POST", "/api/admin/restore/orders")
	restored := waitEvent("store.restored", restore["job_id"].(string))
	if restored["backup_id"] == "" || restored["quarantine"] == nil {
		t.Fatalf("store.restored %v", restored)
	}
	waitEvent("job.succeeded", restore["job_id"].(string))
	if h := call("GET", "/api/history?store=orders"); len(h["history"].([]any)) != 3 {
		t.Fatalf("history %v", h)
	}

	srv.stop(t) // exit status 0 after SIGTERM
	joined := srv.logs.String()
	if strings.Contains(joined, token) {
		t.Fatal("the token was logged")
	}
	if !regexp.MustCompile(`"msg":"worker stopped"`).MatchString(joined) {
		t.Fatalf("no clean worker stop in the logs:\n%s", joined)
	}
	// The shutdown's last line says it is over.
	if lines := strings.Split(strings.TrimSpace(joined), "\n"); !strings.Contains(lines[len(lines)-1], `"msg":"storekeeper stopped"`) {
		t.Fatalf("the last log line is %s, want storekeeper stopped", lines[len(lines)-1])
	}
}

// --tls-cert/--tls-key serve HTTPS; the in-process Redis needs no setup.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	var stdout bytes.Buffer
	var stderr syncbuf.Buffer // read while run writes
	go func() {
		done <- run(ctx, []string{"serve", "--listen", listenAddr, "--tls-cert", certFile, "--tls-key", keyFile, "--stores", "orders",
			"--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups"), "--node", "tls"}, &stdout, &stderr)
	}()
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(t, der))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	waitReady(t, client, listening(t, stderr.String, nil), nil, stderr.String)
	if !strings.Contains(stdout.String(), "generated an operator token") || !strings.Contains(stderr.String(), "in memory only") {
		t.Fatalf("the embedded defaults did not say so:\n%s\n%s", stdout.String(), stderr.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

// answersAs reports whether the Redis process with pid answers on port
// within 10 s.
func answersAs(t *testing.T, port, pid int) bool {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer c.Close()
	answered := false
	testsignal.Poll(10*time.Second, func() bool {
		info, err := c.Info(t.Context(), "server").Result()
		if err != nil {
			return false
		}
		answered = strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", pid))
		return true
	})
	return answered
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// --redis in the Sentinel form finds the master through a real sentinel.
func TestServeSentinel(t *testing.T) {
	master := redistest.Start(t, redistest.RequireReal())
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	host, mport, _ := net.SplitHostPort(master.Addr())
	// A sentinel must be given its port: one that another process takes
	// between freeAddr and the sentinel's bind is tried again, and the
	// sentinel answering must be the one started here.
	var sport int
	for attempt := 1; ; attempt++ {
		_, p, _ := net.SplitHostPort(freeAddr(t))
		sport, _ = strconv.Atoi(p)
		conf := filepath.Join(dir, "sentinel.conf")
		_ = os.WriteFile(conf, fmt.Appendf(nil, "port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster %s %s 1\n", sport, dir, host, mport), 0o600)
		sentinel := exec.Command(bin, conf, "--sentinel")
		if err := sentinel.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sentinel.Process.Kill(); _ = sentinel.Wait() })
		if answersAs(t, sport, sentinel.Process.Pid) {
			break
		}
		_ = sentinel.Process.Kill()
		if attempt == 5 {
			t.Fatal("no sentinel of ours answered on five ports")
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	var stdout bytes.Buffer
	var stderr syncbuf.Buffer // read while run writes
	go func() {
		done <- run(ctx, []string{"serve", "--listen", listenAddr, "--redis", fmt.Sprintf("redis+sentinel://127.0.0.1:%d/mymaster/0", sport),
			"--stores", "orders", "--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups"), "--node", "sen"}, &stdout, &stderr)
	}()
	stopped := exited(t, done, "serve")
	waitReady(t, http.DefaultClient, listening(t, stderr.String, stopped), stopped, stderr.String)
	// The worker wrote its ownership into the master the sentinel named.
	if owner, err := master.Client(t).HGet(t.Context(), "storekeeper:stores", "orders").Result(); err != nil || owner != "sen" {
		t.Fatalf("ownership in the master: %q, %v", owner, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}
