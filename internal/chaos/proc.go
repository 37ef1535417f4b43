package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one process of the cluster, restartable with the same command
// line; its output goes to log, appended across restarts.
type proc struct {
	name string
	args []string
	env  []string
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current run exits
	paused bool
	starts int
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== %s start #%d at %s: %v\n", p.name, p.starts+1, time.Now().Format(time.RFC3339Nano), p.args)
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.paused = cmd, done, false
	p.starts++
	go func() {
		_ = cmd.Wait()
		f.Close()
		p.mu.Lock()
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// running reports whether the process is alive (paused or not).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

func (p *proc) signal(sig syscall.Signal) (chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil, errors.New(p.name + ": not running")
	}
	if p.paused && sig != syscall.SIGCONT && sig != syscall.SIGKILL {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		p.paused = false
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	}
	return p.done, p.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() error {
	done, err := p.signal(syscall.SIGKILL)
	if err != nil {
		return err
	}
	<-done
	return nil
}

// stop asks for a graceful exit (SIGTERM) and kills after grace.
func (p *proc) stop(grace time.Duration) error {
	done, err := p.signal(syscall.SIGTERM)
	if err != nil {
		return nil // not running
	}
	select {
	case <-done:
		return nil
	case <-time.After(grace):
		_ = p.kill()
		return fmt.Errorf("%s: no exit %s after SIGTERM: killed", p.name, grace)
	}
}

func (p *proc) pause() error  { _, err := p.signal(syscall.SIGSTOP); return err }
func (p *proc) resume() error { _, err := p.signal(syscall.SIGCONT); return err }
