package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"storekeeper/internal/freeport"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	pollInterval = 20 * time.Millisecond
	confName     = "redis.conf"
	logName      = "redis.log"
)

// errAddrInUse means redis-server exited because its port was taken.
var errAddrInUse = errors.New("address already in use")

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	p, err := freeport.Loopback()
	if err != nil {
		return 0, fmt.Errorf("redistest: find free port: %w", err)
	}
	return p, nil
}

// writeConfig writes dir/redis.conf, which launch (and so Restart) reuses.
func writeConfig(dir string, port int, cfg config) error {
	appendonly, fsync := "no", "everysec"
	if cfg.aof {
		appendonly, fsync = "yes", cfg.fsync
	}
	// repl-diskless-sync-delay 0: a primary starts a replica's first sync
	// at once instead of waiting 5 s for more replicas to join it.
	conf := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
daemonize no
dir %q
logfile %q
save ""
appendonly %s
appendfsync %s
repl-diskless-sync-delay 0
`, port, dir, filepath.Join(dir, logName), appendonly, fsync)
	if cfg.replicaOf != "" {
		host, port, _ := strings.Cut(cfg.replicaOf, ":")
		conf += fmt.Sprintf("replicaof %s %s\n", host, port)
	}
	if cfg.cluster {
		conf += fmt.Sprintf("cluster-enabled yes\ncluster-config-file %q\n", filepath.Join(dir, "nodes.conf"))
	}
	if err := os.WriteFile(filepath.Join(dir, confName), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("redistest: write config: %w", err)
	}
	return nil
}

// proc is one run of a redis-server process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

// launch starts redis-server with dir's config and waits until it answers
// PING on addr. The error wraps errAddrInUse if the port was taken.
func launch(bin, dir, addr string) (*proc, error) {
	logPath := filepath.Join(dir, logName)
	logStart := fileSize(logPath)

	var stderr bytes.Buffer
	cmd := exec.Command(bin, filepath.Join(dir, confName))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()

	err := p.waitReady(addr)
	if err == nil {
		return p, nil
	}
	p.kill()
	out := stderr.String() + readFrom(logPath, logStart)
	if strings.Contains(out, "Address already in use") {
		err = fmt.Errorf("%w: %w", err, errAddrInUse)
	}
	return nil, fmt.Errorf("redis-server on %s: %w\n%s", addr, err, lastLines(out, 20))
}

// waitReady polls addr until the process answers PING or exits or the
// deadline passes.
func (p *proc) waitReady(addr string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited early: %v", p.cmd.ProcessState)
		case <-time.After(pollInterval):
		}
		pid, err := probe(addr)
		if err == nil {
			if pid != p.cmd.Process.Pid {
				return fmt.Errorf("another process (pid %d) answers on %s", pid, addr)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", readyTimeout, err)
		}
	}
}

// probe sends PING and INFO server to addr and returns the process_id of the
// server that answered PONG.
func probe(addr string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "PING\r\nINFO server\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return 0, fmt.Errorf("ping: got %q", line) // e.g. -LOADING while reading the AOF
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("info: %w", err)
		}
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
}

// stop sends SIGTERM, then SIGKILL if the process has not exited after
// stopTimeout, and waits for it. A paused (SIGSTOPped) process is continued
// first: it would only act on the SIGTERM once continued, so it would sit
// out the whole stopTimeout and be killed.
func (p *proc) stop() {
	continueProcess(p.cmd.Process)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.kill()
	}
}

// kill sends SIGKILL and waits for the process to exit. It does not
// continue a paused (SIGSTOPped) process first: SIGKILL ends it as it is,
// so a crash while stalled never runs what clients sent meanwhile.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the content of path from offset on, or "" on error.
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
