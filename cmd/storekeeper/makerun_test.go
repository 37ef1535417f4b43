package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"storekeeper/internal/demo"
)

// demoStores are the stores serve --demo creates (browser_test.go counts
// them too).
var demoStores = demo.Stores

// What a newcomer does: `make run` (no Redis, no token given), then the
// dashboard, the API and asynqmon answer within 10 s of the process
// starting, `ctl compact --all --wait` finishes and `ctl watch` prints the
// events. Only the port and the directories differ from the defaults.
func TestMakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs make run")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	dir := t.TempDir()
	bin := buildBinary(t) // also warms the build cache make run uses
	cmd := exec.Command("make", "run", "LISTEN="+listenAddr, "DATA_DIR="+filepath.Join(dir, "data"), "BACKUP_DIR="+filepath.Join(dir, "backups"), "OFFSITE_DIR="+filepath.Join(dir, "offsite"))
	cmd.Dir = filepath.Join("..", "..")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var output []string // every line make and the server print
	// Ctrl-C: SIGINT to the whole process group, as a terminal sends it.
	// The server shuts down cleanly; make, interrupted too, has nothing to
	// add (it did, "make: *** [run] Error 1", when go run exited 1).
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
			all := strings.Join(output, "\n")
			if !strings.Contains(all, "worker stopped") || strings.Contains(all, "make: ***") {
				t.Errorf("make run after Ctrl-C: want the server's clean shutdown and no make error; its last lines:\n%s", lastLines(all, 20))
			}
		case <-time.After(20 * time.Second):
			t.Error("make run did not stop 20 s after SIGINT")
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	// The first line the server itself writes starts the clock; the address
	// and the token come from the dashboard link it prints.
	started, links := make(chan time.Time, 1), make(chan []string, 1)
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		link := regexp.MustCompile(`Dashboard: (\S+)/#token=(\S+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			output = append(output, l)
			if strings.Contains(l, "in-process Redis") {
				select {
				case started <- time.Now():
				default:
				}
			}
			if m := link.FindStringSubmatch(l); m != nil {
				links <- m
			}
		}
	}()
	go func() { _ = cmd.Wait(); <-outDone; close(exited) }()
	var t0 time.Time
	var base, token string
	select {
	case t0 = <-started:
	case <-exited:
		t.Fatalf("make run exited:\n%s", strings.Join(output, "\n"))
	case <-time.After(3 * time.Minute):
		t.Fatal("make run printed nothing in 3 minutes")
	}
	select {
	case m := <-links:
		base, token = m[1], m[2]
	case <-time.After(10 * time.Second):
		t.Fatal("no dashboard link with a token printed")
	}

	get := func(path string, auth func(*http.Request)) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != nil {
			auth(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	basic := func(r *http.Request) { r.SetBasicAuth("me", token) }
	waitFor(t, 10*time.Second-time.Since(t0), "the dashboard, the API and /monitoring/", func() bool {
		return get("/", nil) == 200 && get("/api/stores", bearer) == 200 && get("/monitoring/", basic) == 200
	})
	t.Logf("make run: dashboard, API and /monitoring/ answered %s after the server started", time.Since(t0).Round(time.Millisecond))

	// ctl against it, as the README's tour does.
	env := append(os.Environ(), "STOREKEEPER_SERVER="+base, "STOREKEEPER_TOKEN="+token)
	ctx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	watch := exec.CommandContext(ctx, bin, "ctl", "watch", "--json", "--since", "0") // from the start: nothing is missed however late it connects
	watch.Env = env
	watchOut, _ := watch.StdoutPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopWatch(); _ = watch.Wait() }()
	watched := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(watchOut)
		for sc.Scan() {
			watched <- sc.Text()
		}
		close(watched)
	}()
	compact := exec.Command(bin, "ctl", "compact", "--all", "--wait")
	compact.Env = env
	if b, err := compact.CombinedOutput(); err != nil {
		t.Fatalf("ctl compact --all --wait: %v\n%s", err, b)
	} else {
		t.Logf("ctl compact --all --wait:\n%s", b)
	}
	succeeded := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(succeeded) < len(demoStores) {
		select {
		case l, ok := <-watched:
			if !ok {
				t.Fatalf("ctl watch stopped; saw %v", succeeded)
			}
			if strings.Contains(l, "stream.gap") {
				// Nothing was trimmed: the stream is far below its cap.
				t.Errorf("ctl watch --since 0 on a fresh server reported a gap: %s", l)
			}
			for _, d := range demoStores {
				if strings.Contains(l, `"type":"job.succeeded"`) && strings.Contains(l, `"kind":"compact"`) && strings.Contains(l, `"store":"`+d.Name+`"`) {
					succeeded[d.Name] = true
				}
			}
		case <-deadline:
			t.Fatalf("ctl watch printed the compactions' job.succeeded for %v only", succeeded)
		}
	}
}
