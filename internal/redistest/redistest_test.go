package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/testsignal"
)

func setGet(t *testing.T, c *redis.Client, key, val string) {
	t.Helper()
	ctx := context.Background()
	if err := c.Set(ctx, key, val, 0).Err(); err != nil {
		t.Fatalf("set %s: %v", key, err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != val {
		t.Fatalf("get %s = %q, %v; want %q", key, got, err, val)
	}
}

func requireRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("redis-server not on PATH and %s is set", RequireEnv)
		}
		t.Skip("redis-server not on PATH: crash tests need it")
	}
}

func TestStartSetGet(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Errorf("Addr() = %q, want a 127.0.0.1 address", s.Addr())
	}
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	setGet(t, s.Client(t), "k", "v")

	s.FlushAll(t)
	if n, err := s.Client(t).DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Errorf("after FlushAll: dbsize = %d, %v; want 0", n, err)
	}
}

func TestTwoServersDifferentPorts(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers on %s", a.Addr())
	}
	if a.Dir() == b.Dir() {
		t.Fatalf("both servers in %s", a.Dir())
	}
	ctx := context.Background()
	ca, cb := a.Client(t), b.Client(t)
	setGet(t, ca, "only-a", "1")
	if n, err := cb.Exists(ctx, "only-a").Result(); err != nil || n != 0 {
		t.Fatalf("key written to a is visible on b: exists = %d, %v", n, err)
	}
}

func TestKillRestartKeepsAOFData(t *testing.T) {
	requireRedisServer(t)
	s := Start(t, RequireReal(), WithAOF("always"))
	if !s.Real() {
		t.Fatal("Real() = false with RequireReal")
	}
	c := s.Client(t)
	setGet(t, c, "durable", "yes")

	if err := s.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if conn, err := net.Dial("tcp", s.Addr()); err == nil {
		conn.Close()
		t.Fatal("server still accepts connections after Kill")
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	got, err := c.Get(context.Background(), "durable").Result()
	if err != nil || got != "yes" {
		t.Fatalf("after restart: get = %q, %v; want \"yes\"", got, err)
	}
}

func TestRestartFailsIfPortTaken(t *testing.T) {
	requireRedisServer(t)
	s := Start(t, RequireReal())
	if err := s.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	l, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatalf("take port: %v", err)
	}
	defer l.Close()
	err = s.Restart()
	if err == nil || !strings.Contains(err.Error(), "taken") {
		t.Fatalf("Restart() on a taken port = %v, want a \"port was taken\" error", err)
	}
}

func TestStopIsIdempotent(t *testing.T) {
	s := Start(t)
	s.Stop()
	s.Stop()
}

func TestStartMain(t *testing.T) {
	s, stop, err := StartMain()
	if err != nil {
		t.Fatal(err)
	}
	setGet(t, s.Client(t), "k", "v")
	stop()
	stop()
	if _, err := os.Stat(s.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir %s still there after stop: %v", s.Dir(), err)
	}
}

func TestWithAOFRejectsBadFsync(t *testing.T) {
	if _, _, err := StartMain(WithAOF("sometimes")); err == nil {
		t.Fatal("StartMain accepted appendfsync \"sometimes\"")
	}
}

// withoutRedisServer hides redis-server from exec.LookPath for this test.
func withoutRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(RequireEnv, "")
}

func TestFallbackToMiniredis(t *testing.T) {
	withoutRedisServer(t)
	s := Start(t)
	if s.Real() {
		t.Fatal("Real() = true without redis-server on PATH")
	}
	c := s.Client(t)
	setGet(t, c, "k", "v")

	ctx := context.Background()
	if err := c.Set(ctx, "ttl", "x", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	testsignal.WaitForWithin(t, 5*time.Second, "the key with a 1 s TTL expiring", func() bool {
		return c.Exists(ctx, "ttl").Val() == 0
	})

	if err := s.Kill(); !errors.Is(err, ErrNotReal) {
		t.Errorf("Kill() = %v, want ErrNotReal", err)
	}
	if err := s.Restart(); !errors.Is(err, ErrNotReal) {
		t.Errorf("Restart() = %v, want ErrNotReal", err)
	}
}

// fatalTB records Fatalf instead of failing the real test.
type fatalTB struct {
	testing.TB
	mu    sync.Mutex
	fatal string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// startFatal runs Start with a fatalTB and returns the Fatalf message, or ""
// if Start succeeded.
func startFatal(t *testing.T, opts ...Option) string {
	t.Helper()
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(tb, opts...)
	}()
	<-done
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.fatal
}

func TestRequireEnvForbidsFallback(t *testing.T) {
	withoutRedisServer(t)
	t.Setenv(RequireEnv, "1")
	msg := startFatal(t)
	if !strings.Contains(msg, RequireEnv) {
		t.Fatalf("Start did not fail mentioning %s; Fatalf message: %q", RequireEnv, msg)
	}
	if _, _, err := StartMain(); err == nil {
		t.Fatal("StartMain fell back to miniredis with " + RequireEnv + "=1")
	}
}

func TestRequireRealForbidsFallback(t *testing.T) {
	withoutRedisServer(t)
	msg := startFatal(t, RequireReal())
	if !strings.Contains(msg, "requires redis-server") {
		t.Fatalf("Start(RequireReal()) did not fail; Fatalf message: %q", msg)
	}
}
