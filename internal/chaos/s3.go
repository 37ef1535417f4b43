package chaos

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The backup target of a run is an S3 server in a process of its own,
// s3rver (npm, installed by .ci/run into .ci/npm), reached by the nodes
// through gocloud's s3blob as any S3-compatible endpoint: the faults take
// it down (killed, then started again on its data), make it hang
// (SIGSTOP) and damage an object in its files. Without s3rver the target
// is a file:// directory, and the run says so.

// s3Env is the AWS environment the nodes and the checker reach s3rver
// with (it accepts any key).
var s3Env = []string{"AWS_ACCESS_KEY_ID=S3RVER", "AWS_SECRET_ACCESS_KEY=S3RVER", "AWS_REGION=us-east-1"}

// s3Bucket is the target's bucket in s3rver.
const s3Bucket = "vault"

type s3Server struct {
	addr string
	dir  string // s3rver's data: <dir>/<bucket>/<key>._S3rver_object
	*proc
}

func (s *s3Server) url() string {
	q := url.Values{"endpoint": {"http://" + s.addr}, "region": {"us-east-1"}, "use_path_style": {"true"}, "disable_https": {"true"},
		"response_checksum_validation": {"when_required"}}
	return "s3://" + s3Bucket + "?" + q.Encode()
}

// objectPath is where s3rver keeps the object under key.
func (s *s3Server) objectPath(key string) string {
	return filepath.Join(s.dir, s3Bucket, filepath.FromSlash(key)+"._S3rver_object")
}

// s3rverBin finds s3rver on $PATH or in the module's .ci/npm.
func s3rverBin() (string, error) {
	if p, err := exec.LookPath("s3rver"); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), ".ci", "npm", "node_modules", ".bin", "s3rver")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("s3rver is not installed (npm install --prefix .ci/npm s3rver@3.7.1): %w", err)
	}
	return p, nil
}

// startS3 starts s3rver as the backup target, or leaves the target a
// file:// directory when it is not installed (said in the log). The
// checker reaches it too: the AWS environment is set for this process.
func (c *Cluster) startS3(ctx context.Context) error {
	bin, err := s3rverBin()
	if err != nil {
		c.logf("the backup target is a file:// directory: %v", err)
		return nil
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s := &s3Server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: c.vault()}
	s.proc = &proc{name: "s3rver", log: filepath.Join(c.opt.Dir, "s3rver.log"),
		args: []string{bin, "-d", s.dir, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-s", "--configure-bucket", s3Bucket, "--allow-mismatched-signatures"}}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	if err := s.start(); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "s3rver", func() error {
		if !s.running() {
			return giveUp{fmt.Errorf("s3rver exited while starting; the end of %s:\n%s", s.log, tail(s.log, 20))}
		}
		conn, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}); err != nil {
		return err
	}
	for _, kv := range s3Env {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	c.s3 = s
	c.logf("the backup target is s3rver at %s", s.addr)
	return nil
}
