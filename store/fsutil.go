package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// copyBuf is the copy buffer size: big enough that the syscall count does
// not matter next to the bytes.
const copyBuf = 1 << 20

// fileCopiers is how many files a backup or a restore copies at once. A
// copy waits on the disk (its writes and its fsync) far more than it uses
// a core for SHA-256, and disks, virtual ones above all, serve several
// requests faster than one at a time, so it is well above the core count
// (docs/BENCHMARKS.md, "Notes", says how it was chosen).
const fileCopiers = 16

// copyTiming is where a copy's time went, for the benchmark breakdowns.
type copyTiming struct {
	Hash time.Duration `json:"hash"` // inside the SHA-256
	Sync time.Duration `json:"sync"` // inside fsync
}

func (t *copyTiming) add(o copyTiming) { t.Hash += o.Hash; t.Sync += o.Sync }

// timedHash is a hash.Hash writer that counts the time spent in Write.
type timedHash struct {
	hash.Hash
	d *time.Duration
}

func (h timedHash) Write(p []byte) (int, error) {
	t := time.Now()
	n, err := h.Hash.Write(p)
	*h.d += time.Since(t)
	return n, err
}

// copyHashed copies src to dst (created, must not exist), computing the
// SHA-256 of the bytes while they pass, and syncs dst. It returns the hex
// digest and the size; tm, when not nil, collects hash and sync time.
func copyHashed(srcFS vfs.FS, src string, dstFS vfs.FS, dst string, tm *copyTiming) (string, int64, error) {
	in, err := srcFS.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	out, err := dstFS.Create(dst, vfs.WriteCategoryUnspecified)
	if err != nil {
		return "", 0, err
	}
	var ct copyTiming
	h := sha256.New()
	// The hash sees the bytes first: vfs.File.Write may modify its input.
	n, err := io.CopyBuffer(io.MultiWriter(timedHash{h, &ct.Hash}, out), in, make([]byte, copyBuf))
	if err == nil {
		t := time.Now()
		err = out.Sync()
		ct.Sync = time.Since(t)
	}
	if tm != nil {
		tm.add(ct)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = dstFS.Remove(dst)
		return "", 0, fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// hashFile returns the SHA-256 and size of a file.
func hashFile(fs vfs.FS, path string) (string, int64, error) {
	f, err := fs.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, copyBuf))
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// exchange swaps two paths atomically with renameat2(RENAME_EXCHANGE).
func exchange(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return &os.LinkError{Op: "exchange", Old: a, New: b, Err: err}
	}
	return nil
}

// within reports whether path is dir or inside it, after resolving
// symlinks of the parts that exist.
func within(path, dir string) bool {
	p, d := resolve(path), resolve(dir)
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (rel == "." || !startsWithDotDot(rel))
}

func startsWithDotDot(rel string) bool {
	return len(rel) >= 3 && rel[:3] == ".."+string(filepath.Separator)
}

// resolve makes path absolute and resolves symlinks in its longest
// existing prefix.
func resolve(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	rest := ""
	for cur := abs; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// isNotExist reports a missing file through any wrapping.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
