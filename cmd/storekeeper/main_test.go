package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// The binary, built once for the tests that run it as a process.
var binary struct {
	once      sync.Once
	dir, path string
	err       error
}

func buildBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		if binary.dir, binary.err = os.MkdirTemp("", "storekeeper-test-bin-"); binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "storekeeper")
		if out, err := exec.Command("go", "build", "-o", binary.path, ".").CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("build: %w\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

// freeAddr is a loopback address with a port nobody listens on, for now:
// another process may take it before it is used. A storekeeper under test
// listens on 127.0.0.1:0 instead and says where (see listening).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// listenAddr is what a storekeeper under test listens on: a port the
// kernel picks when it binds, named in its "storekeeper listening" line.
const listenAddr = "127.0.0.1:0"

// listeningRE finds the URL in the "storekeeper listening" log line, in
// the text and the JSON log formats.
var listeningRE = regexp.MustCompile(`storekeeper listening.*?\burl"?[=:]"?(https?://[^\s"]+)`)

// listening waits for a storekeeper's "storekeeper listening" line in
// logs and returns the URL it names. It fails the test when stopped (may
// be nil) reports the process gone, or after 60 s.
func listening(t *testing.T, logs func() string, stopped func() bool) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(logs()); m != nil {
			return m[1]
		}
		if stopped != nil && stopped() {
			t.Fatalf("stopped before it listened:\n%s", logs())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"storekeeper listening\" line after 60 s:\n%s", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exited reports, without waiting, whether a run in this process has
// returned on done, logging its exit code when it has: the stopped
// argument of listening and waitReady.
func exited(t *testing.T, done <-chan int, what string) func() bool {
	return func() bool {
		select {
		case code := <-done:
			t.Logf("%s exited %d", what, code)
			return true
		default:
			return false
		}
	}
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitReady polls base/readyz until it answers 200. It fails the test at
// once when stopped (may be nil) reports the server gone, or after 30 s;
// then with logs (may be nil), read only then.
func waitReady(t *testing.T, client *http.Client, base string, stopped func() bool, logs func() string) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		if logs != nil {
			format, args = format+":\n%s", append(args, logs())
		}
		t.Fatalf(format, args...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		last := ""
		if resp, err := client.Get(base + "/readyz"); err != nil {
			last = err.Error()
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		}
		if stopped != nil && stopped() {
			fail("%s stopped before it was ready", base)
		}
		if time.Now().After(deadline) {
			fail("%s not ready after 30 s (last answer: %s)", base, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
