package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/memredis"
)

// RequireEnv is the environment variable that, when set to 1, forbids the
// miniredis fallback.
const RequireEnv = "STOREKEEPER_REQUIRE_REDIS"

// ErrNotReal is returned by operations that need a real redis-server
// process, such as Kill, Restart, Pause and Resume, on a miniredis-backed
// Server.
var ErrNotReal = errors.New("redistest: crash tests need a real redis-server, not miniredis")

const fallbackNotice = "redistest: redis-server not found; using in-process miniredis (set " + RequireEnv + "=1 to forbid)"

var noticeOnce sync.Once

// Option configures a Server.
type Option func(*config)

type config struct {
	aof         bool
	fsync       string
	requireReal bool
	replicaOf   string // host:port of the primary; "" for a primary
	cluster     bool
}

// WithAOF turns on the append-only file with the given appendfsync policy,
// "always" or "everysec".
func WithAOF(fsync string) Option {
	return func(c *config) {
		c.aof = true
		c.fsync = fsync
	}
}

// AsClusterNode starts the real redis-server with cluster mode on (a
// node of no cluster yet), for tests of what storekeeper refuses;
// miniredis cannot be one, so it implies RequireReal.
func AsClusterNode() Option {
	return func(c *config) { c.cluster, c.requireReal = true, true }
}

// RequireReal forbids the miniredis fallback: Start fails the test if
// redis-server is not on PATH. Use it for crash, load and performance tests.
func RequireReal() Option {
	return func(c *config) { c.requireReal = true }
}

// Server is a private Redis: a redis-server process or, as a fallback, an
// in-process miniredis.
type Server struct {
	dir  string
	addr string

	// Real redis-server only.
	bin  string
	port int

	// miniredis fallback only.
	mr *memredis.Server

	mu   sync.Mutex
	proc *proc // nil while the redis-server is not running

	closeOnce sync.Once
}

// Start starts a private Redis for tb and stops it when tb's test ends.
// It calls tb.Fatalf if no server can be started.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := start(opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(s.close)
	return s
}

// StartMain starts a private Redis outside of any test, for example in
// TestMain. The caller must call stop when done with it.
func StartMain(opts ...Option) (srv *Server, stop func(), err error) {
	s, err := start(opts)
	if err != nil {
		return nil, nil, err
	}
	return s, s.close, nil
}

func start(opts []Option) (*Server, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.aof && cfg.fsync != "always" && cfg.fsync != "everysec" {
		return nil, fmt.Errorf("redistest: appendfsync %q: want \"always\" or \"everysec\"", cfg.fsync)
	}

	bin, lookErr := exec.LookPath("redis-server")
	if lookErr != nil {
		if cfg.requireReal {
			return nil, fmt.Errorf("redistest: this test requires redis-server: %w", lookErr)
		}
		if requiredByEnv() {
			return nil, fmt.Errorf("redistest: %s is set, so redis-server is required and miniredis is not allowed: %w", RequireEnv, lookErr)
		}
	}

	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	s := &Server{dir: dir, bin: bin}
	if lookErr != nil {
		err = s.startMiniredis()
	} else {
		err = s.startReal(cfg)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func requiredByEnv() bool {
	v, _ := strconv.ParseBool(os.Getenv(RequireEnv))
	return v
}

// startReal picks a free port and launches redis-server on it, retrying
// with another port if someone else binds it in between.
func (s *Server) startReal(cfg config) error {
	const attempts = 5
	var err error
	for range attempts {
		s.port, err = freePort()
		if err != nil {
			return err
		}
		s.addr = "127.0.0.1:" + strconv.Itoa(s.port)
		if err = writeConfig(s.dir, s.port, cfg); err != nil {
			return err
		}
		s.proc, err = launch(s.bin, s.dir, s.addr)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errAddrInUse) {
			return fmt.Errorf("redistest: %w", err)
		}
	}
	return fmt.Errorf("redistest: no free port after %d attempts: %w", attempts, err)
}

func (s *Server) startMiniredis() error {
	mr, err := memredis.Start()
	if err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	noticeOnce.Do(func() { fmt.Fprintln(os.Stderr, fallbackNotice) })
	s.mr, s.addr = mr, mr.Addr()
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL returns a redis:// URL for database 0.
func (s *Server) URL() string { return "redis://" + s.addr + "/0" }

// Real reports whether s is a redis-server process rather than miniredis.
func (s *Server) Real() bool { return s.mr == nil }

// Dir returns the server's private directory (data, redis.conf, redis.log).
func (s *Server) Dir() string { return s.dir }

// Client returns a go-redis client for s, closed when tb's test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// FlushAll deletes every key, giving a test a clean state on a shared server.
func (s *Server) FlushAll(tb testing.TB) {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.FlushAll(ctx).Err(); err != nil {
		tb.Fatalf("redistest: flushall: %v", err)
	}
}

// Kill sends SIGKILL to the redis-server and waits for it to exit,
// simulating a crash.
func (s *Server) Kill() error {
	if !s.Real() {
		return fmt.Errorf("redistest: kill: %w", ErrNotReal)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return errors.New("redistest: kill: server is not running")
	}
	s.proc.kill()
	s.proc = nil
	return nil
}

// Pause sends SIGSTOP to the redis-server: it neither answers nor runs
// anything until Resume, while its kernel still accepts connections and
// buffers what clients send, as when Redis stalls (a slow fork or disk, a
// paused VM). Clients whose reads time out meanwhile retry, and a resumed
// server runs the originals and the retries alike.
func (s *Server) Pause() error {
	return s.signal("pause", stopProcess)
}

// Resume sends SIGCONT to a paused redis-server. Stop, Restart and the
// cleanup continue a paused server themselves before stopping it; Kill
// kills it as it is.
func (s *Server) Resume() error {
	return s.signal("resume", continueProcess)
}

func (s *Server) signal(op string, send func(*os.Process) error) error {
	if !s.Real() {
		return fmt.Errorf("redistest: %s: %w", op, ErrNotReal)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return fmt.Errorf("redistest: %s: server is not running", op)
	}
	if err := send(s.proc.cmd.Process); err != nil {
		return fmt.Errorf("redistest: %s: %w", op, err)
	}
	return nil
}

// Restart starts the redis-server again on the same port with the same
// directory and config, so an AOF written before is reloaded. A running
// server is stopped gracefully first. Restart fails if the port has been
// taken in the meantime.
func (s *Server) Restart() error {
	if !s.Real() {
		return fmt.Errorf("redistest: restart: %w", ErrNotReal)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.stop()
		s.proc = nil
	}
	p, err := launch(s.bin, s.dir, s.addr)
	if errors.Is(err, errAddrInUse) {
		return fmt.Errorf("redistest: restart: port %d was taken meanwhile: %w", s.port, err)
	}
	if err != nil {
		return fmt.Errorf("redistest: restart: %w", err)
	}
	s.proc = p
	return nil
}

// Stop shuts the server down gracefully. It is safe to call more than once.
func (s *Server) Stop() {
	if !s.Real() {
		s.mr.Close()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.stop()
		s.proc = nil
	}
}

// close stops the server for good and removes its directory.
func (s *Server) close() {
	s.closeOnce.Do(func() {
		s.Stop()
		os.RemoveAll(s.dir)
	})
}
