package redistest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/testsignal"
)

// fastFailClient gives up on a reply after 100ms, without retrying.
func fastFailClient(t *testing.T, s *Server) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ReadTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPauseResume(t *testing.T) {
	requireRedisServer(t)
	s := Start(t, RequireReal())
	c := fastFailClient(t, s)
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	if err := s.Pause(); err != nil {
		t.Fatalf("pause: %v", err)
	}
	err := c.Incr(ctx, "n").Err()
	if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("incr on a paused server: err = %v, want a timeout", err)
	}

	if err := s.Resume(); err != nil {
		t.Fatalf("resume: %v", err)
	}
	// The INCR that timed out sat in the server's socket buffer: it runs now.
	var n int
	if !testsignal.Poll(5*time.Second, func() bool {
		n, err = c.Get(ctx, "n").Int()
		return err == nil && n == 1
	}) {
		t.Fatalf("after resume: n = %d, %v; want 1", n, err)
	}
}

func TestPausedServerIsStoppedCleanly(t *testing.T) {
	requireRedisServer(t)

	t.Run("Stop", func(t *testing.T) {
		s := Start(t, RequireReal())
		if err := s.Pause(); err != nil {
			t.Fatalf("pause: %v", err)
		}
		start := time.Now()
		s.Stop()
		if d := time.Since(start); d > stopTimeout/2 {
			t.Fatalf("stopping a paused server took %v", d)
		}
		log, _ := os.ReadFile(filepath.Join(s.Dir(), logName))
		if !strings.Contains(string(log), "ready to exit") {
			t.Fatalf("paused server did not shut down gracefully; log:\n%s", lastLines(string(log), 10))
		}
		if err := s.Resume(); err == nil {
			t.Fatal("Resume on a stopped server: no error")
		}
	})

	t.Run("Kill", func(t *testing.T) {
		s := Start(t, RequireReal())
		if err := s.Pause(); err != nil {
			t.Fatalf("pause: %v", err)
		}
		if err := s.Kill(); err != nil {
			t.Fatalf("kill: %v", err)
		}
		if err := s.Restart(); err != nil {
			t.Fatalf("restart: %v", err)
		}
		setGet(t, s.Client(t), "k", "v")
	})

	start := time.Now()
	t.Run("cleanup", func(t *testing.T) {
		s := Start(t, RequireReal())
		if err := s.Pause(); err != nil {
			t.Fatalf("pause: %v", err)
		}
	})
	if d := time.Since(start); d > stopTimeout/2 {
		t.Fatalf("a test whose server was left paused took %v, cleanup included", d)
	}
}

func TestPauseNeedsRealServer(t *testing.T) {
	withoutRedisServer(t)
	s := Start(t)
	if err := s.Pause(); !errors.Is(err, ErrNotReal) {
		t.Errorf("Pause() = %v, want ErrNotReal", err)
	}
	if err := s.Resume(); !errors.Is(err, ErrNotReal) {
		t.Errorf("Resume() = %v, want ErrNotReal", err)
	}
}
