package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"storekeeper/internal/syncbuf"
	"storekeeper/internal/testsignal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
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
	// Runs in this process (serve, ctl) leave no goroutine behind.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
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
	var url string
	if !testsignal.Poll(60*time.Second, func() bool {
		if m := listeningRE.FindStringSubmatch(logs()); m != nil {
			url = m[1]
			return true
		}
		if stopped != nil && stopped() {
			t.Fatalf("stopped before it listened:\n%s", logs())
		}
		return false
	}) {
		t.Fatalf("no \"storekeeper listening\" line after 60 s:\n%s", logs())
	}
	return url
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
	testsignal.WaitForWithin(t, limit, what, cond)
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
	last := ""
	if !testsignal.Poll(30*time.Second, func() bool {
		if resp, err := client.Get(base + "/readyz"); err != nil {
			last = err.Error()
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
			last = resp.Status
		}
		if stopped != nil && stopped() {
			fail("%s stopped before it was ready", base)
		}
		return false
	}) {
		fail("%s not ready after 30 s (last answer: %s)", base, last)
	}
}

// process is one storekeeper binary a test started.
type process struct {
	name   string
	addr   string // host:port, known once waitReady returned
	cmd    *exec.Cmd
	logs   syncbuf.Buffer
	exited chan struct{}
	err    error // Wait's, once exited is closed
	shown  bool  // its exit and logs are in the test's output
}

// startProcess starts bin with args on a port it picks; a cleanup stops it
// (SIGTERM, then SIGKILL after 20 s) and expects exit status 0.
func startProcess(t *testing.T, bin, name string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append(args, "--listen", listenAddr)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			if t.Failed() && !p.shown {
				t.Logf("%s had already exited (%v); its last logs:\n%s", p.name, p.err, lastLines(p.logs.String(), 200))
			}
			return
		default:
		}
		p.stop(t)
		if t.Failed() {
			t.Logf("%s's last logs:\n%s", p.name, lastLines(p.logs.String(), 200))
		}
	})
	return p
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 20 s), which
// must be clean: exit status 0. Its logs are complete afterwards.
func (p *process) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("%s: no exit 20 s after SIGTERM; killed", p.name)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	if p.err != nil {
		t.Errorf("%s: SIGTERM should end it cleanly, with exit status 0: %v", p.name, p.err)
	}
}

// mustBeRunning fails the test at once, with the process's exit status
// and last logs, when it has exited.
func (p *process) mustBeRunning(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		p.shown = true
		t.Fatalf("%s exited (%v); its last logs:\n%s", p.name, p.err, lastLines(p.logs.String(), 200))
	default:
	}
}

// lastLines is the last n lines of s. Where the Go runtime reported a
// crash (panic, fatal error, signal), it is the n/2 lines before the
// report and the report's first n/2 lines: the cause, not the last
// goroutines of the dump.
func lastLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	tail := func(lines []string, n int) string {
		if len(lines) <= n {
			return strings.Join(lines, "")
		}
		return fmt.Sprintf("[%d lines left out]\n", len(lines)-n) + strings.Join(lines[len(lines)-n:], "")
	}
	for i, l := range lines {
		for _, crash := range []string{"panic: ", "fatal error: ", "SIGQUIT: ", "SIGABRT: ", "SIGSEGV: "} {
			if strings.HasPrefix(l, crash) {
				report := lines[i:]
				if len(report) > n/2 {
					report = append(report[:n/2:n/2], fmt.Sprintf("[%d lines left out]\n", len(lines)-i-n/2))
				}
				return tail(lines[:i], n/2) + strings.Join(report, "")
			}
		}
	}
	return tail(lines, n)
}

// waitReady learns where the process listens and waits for its /readyz,
// failing at once if it exits.
func (p *process) waitReady(t *testing.T) {
	t.Helper()
	stopped := func() bool {
		select {
		case <-p.exited:
			t.Logf("%s exited: %v", p.name, p.err)
			return true
		default:
			return false
		}
	}
	base := listening(t, p.logs.String, stopped)
	p.addr = strings.TrimPrefix(base, "http://")
	waitReady(t, http.DefaultClient, base, stopped, p.logs.String)
}
