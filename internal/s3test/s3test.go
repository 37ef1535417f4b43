// Package s3test starts object storage servers for tests: an S3 server,
// gofakes3 over HTTP on a loopback port, in process, with one bucket
// (Start), and s3rver, a second S3 implementation, as a process
// (StartS3rver); Google Cloud Storage and Azure Blob Storage (cloud.go).
// Clients reach each through gocloud's drivers with a custom endpoint,
// exactly as they would the real service. Fail lets a test make requests
// to gofakes3 fail (a target that breaks mid-upload).
package s3test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"storekeeper/internal/freeport"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"storekeeper/internal/syncbuf"
	"storekeeper/internal/testsignal"
)

// Server is a running fake S3 with one bucket.
type Server struct {
	Bucket string
	srv    *httptest.Server

	mu   sync.Mutex
	fail func(*http.Request) bool
}

// Start starts a server with bucket "backups" for tb, sets the AWS
// credentials environment (any key works) and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	be := s3mem.New()
	const bucket = "backups"
	if err := be.CreateBucket(bucket); err != nil {
		tb.Fatal(err)
	}
	s := &Server{Bucket: bucket}
	fake := gofakes3.New(be, gofakes3.WithLogger(gofakes3.DiscardLog()))
	h := fake.Server()
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		fail := s.fail
		s.mu.Unlock()
		if fail != nil && fail(r) {
			http.Error(w, "injected failure", http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	}))
	tb.Cleanup(s.srv.Close)
	tb.Setenv("AWS_ACCESS_KEY_ID", "test")
	tb.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	tb.Setenv("AWS_REGION", "us-east-1")
	return s
}

// URL is the gocloud URL of the bucket, under prefix when not empty.
func (s *Server) URL(prefix string) string {
	q := url.Values{"endpoint": {s.srv.URL}, "region": {"us-east-1"}, "use_path_style": {"true"}, "disable_https": {"true"}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	return "s3://" + s.Bucket + "?" + q.Encode()
}

// Fail makes every request fn accepts answer 500; nil stops it.
func (s *Server) Fail(fn func(*http.Request) bool) {
	s.mu.Lock()
	s.fail = fn
	s.mu.Unlock()
}

// S3rver is s3rver (npm's s3rver 3.7.1), a second, independent S3
// implementation, run as a process of its own on a free loopback port
// with one bucket. It ignores If-None-Match, as some S3-compatible
// servers do.
type S3rver struct {
	Bucket string
	addr   string
}

// RequireS3rverEnv, set to 1 (by .ci/run), makes StartS3rver fail rather
// than skip when s3rver is not installed.
const RequireS3rverEnv = "STOREKEEPER_REQUIRE_S3RVER"

// StartS3rver starts s3rver for tb, from $PATH or the module's
// .ci/npm/node_modules/.bin (where .ci/run installs it), and stops it when
// tb ends. Without it the test is skipped, saying so, unless
// STOREKEEPER_REQUIRE_S3RVER=1.
func StartS3rver(tb testing.TB) *S3rver {
	tb.Helper()
	bin, err := npmBin("s3rver")
	if err != nil {
		if os.Getenv(RequireS3rverEnv) == "1" {
			tb.Fatalf("s3rver is not installed and %s=1 (npm install --prefix .ci/npm s3rver@3.7.1)", RequireS3rverEnv)
		}
		tb.Skip("s3rver is not installed (npm install --prefix .ci/npm s3rver@3.7.1): the test against a second S3 implementation did not run")
	}
	port, err := freeport.Loopback()
	if err != nil {
		tb.Fatal(err)
	}
	const bucket = "backups"
	addr := serve(tb, "s3rver", port, bin, "-d", tb.TempDir(), "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-s",
		"--configure-bucket", bucket, "--allow-mismatched-signatures")
	tb.Setenv("AWS_ACCESS_KEY_ID", "S3RVER")
	tb.Setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
	tb.Setenv("AWS_REGION", "us-east-1")
	return &S3rver{Bucket: bucket, addr: addr}
}

// URL is the gocloud URL of the bucket.
func (s *S3rver) URL() string {
	// s3rver sends no response checksums; the AWS SDK would log that on
	// every read unless told they are needed only where required.
	q := url.Values{"endpoint": {"http://" + s.addr}, "region": {"us-east-1"}, "use_path_style": {"true"}, "disable_https": {"true"},
		"response_checksum_validation": {"when_required"}}
	return "s3://" + s.Bucket + "?" + q.Encode()
}

// serve runs the server bin args for tb until it ends, waits until it
// listens on port on loopback, and returns its address; its output is
// logged when the test fails.
func serve(tb testing.TB, name string, port int, bin string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if tb.Failed() {
			tb.Logf("%s's output:\n%s", name, out.String())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testsignal.WaitForWithin(tb, 30*time.Second, name+" listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// npmBin finds an npm-installed command on $PATH or in the module's
// .ci/npm/node_modules/.bin, where .ci/run installs it.
func npmBin(name string) (string, error) {
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin, nil
	}
	if root, rerr := moduleRoot(); rerr == nil {
		if p := filepath.Join(root, ".ci", "npm", "node_modules", ".bin", name); fileExists(p) {
			return p, nil
		}
	}
	return "", err
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
