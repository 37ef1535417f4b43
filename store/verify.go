package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sync/errgroup"
)

// VerifyOptions tune a verification.
type VerifyOptions struct {
	// Deep also opens the checkpoint and runs Pebble's CheckLevels: key
	// order, range tombstones and merges across levels. It reads every key.
	Deep bool
}

// VerifyResult reports a verification that found no damage.
type VerifyResult struct {
	Files    int           `json:"files"`
	Bytes    uint64        `json:"bytes"`
	Points   int64         `json:"points,omitempty"` // keys CheckLevels visited (deep only)
	Deep     bool          `json:"deep"`
	Duration time.Duration `json:"duration"`
}

// Verify checks the block checksums of every sstable of the live store.
// It works on a hard-linked checkpoint, so files a concurrent compaction
// deletes are never mistaken for corruption, and the checkpoint holds no
// lock on the store while it is read. Damage (an error Pebble types as
// corruption: a checksum mismatch, a bad footer) returns a CorruptionError
// naming the file and marks the store corrupt. A read that fails (EIO,
// EMFILE, …) fails the verification with that error and marks nothing:
// it says nothing about the bytes on disk.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	start := time.Now()
	progress(ctx, "checkpoint", 0, 0)
	dir, db, err := s.checkpointOf(ctx, "verify")
	if err != nil {
		return VerifyResult{}, err
	}
	defer os.RemoveAll(dir)

	progress(ctx, "validating", 0, 0)
	res, err := s.verifyDir(ctx, dir, opts)
	if err != nil {
		var cerr *CorruptionError
		if errors.As(err, &cerr) {
			if cerr.File != "" {
				cerr.File = filepath.Join(s.dir, filepath.Base(cerr.File))
			}
			s.markCorrupt(db, cerr)
		}
		return res, err
	}
	s.lastVerify.Store(nowNano())
	res.Duration = time.Since(start)
	return res, nil
}

// checkpoint hard-links the live file set (with the WAL flushed) into a new
// directory under the registry's work area and returns its path.
func (s *Store) checkpoint(ctx context.Context, purpose string) (string, error) {
	dir, _, err := s.checkpointOf(ctx, purpose)
	return dir, err
}

// checkpointOf is checkpoint that also returns the database the
// checkpoint was taken of, to tell damage found in it from a stale report
// (markCorrupt).
func (s *Store) checkpointOf(ctx context.Context, purpose string) (string, *pebble.DB, error) {
	db, err := s.acquire()
	if err != nil {
		var cerr *CorruptionError
		if errors.As(err, &cerr) {
			return "", nil, cerr
		}
		return "", nil, err
	}
	defer s.release()
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	dir, err := s.reg.workDir(purpose + "-" + s.name)
	if err != nil {
		return "", nil, err
	}
	if err := db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		os.RemoveAll(dir)
		return "", nil, s.wrap("checkpoint", err)
	}
	return dir, db, nil
}

// verifyDir validates every sstable in dir, in parallel, and with
// opts.Deep runs CheckLevels over dir opened read-only.
func (s *Store) verifyDir(ctx context.Context, dir string, opts VerifyOptions) (VerifyResult, error) {
	res := VerifyResult{Deep: opts.Deep}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return res, err
	}
	var files []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sst") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(files)
	res.Files = len(files)
	if res.Bytes, err = validateTablesSize(ctx, s.opts, s.opts.FS, files, s.name); err != nil {
		return res, err
	}
	if !opts.Deep {
		return res, nil
	}
	points, err := checkLevels(s.opts, dir)
	res.Points = points
	if err != nil {
		if pebble.IsCorruptionError(err) {
			return res, &CorruptionError{Store: s.name, Err: err}
		}
		return res, fmt.Errorf("store %s: check levels: %w", s.name, err)
	}
	return res, nil
}

// validateTablesSize checks the block checksums of files on GOMAXPROCS
// goroutines and returns the bytes read; damage (an error Pebble types as
// corruption) is a CorruptionError naming the file, and store names the
// store in it. Any other error (a failed read) is returned as it is.
func validateTablesSize(ctx context.Context, opts *pebble.Options, fs vfs.FS, files []string, store string) (uint64, error) {
	var bytes atomic.Uint64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, f := range files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			n, err := validateTable(opts, fs, f)
			bytes.Add(n)
			switch {
			case err == nil:
				return nil
			case pebble.IsCorruptionError(err):
				return &CorruptionError{Store: store, File: f, Err: err}
			default:
				return fmt.Errorf("store %s: read %s: %w", store, f, err)
			}
		})
	}
	err := g.Wait()
	return bytes.Load(), err
}

// validateTable checks the block checksums of one sstable and returns its
// size.
func validateTable(opts *pebble.Options, fs vfs.FS, path string) (uint64, error) {
	f, err := fs.Open(path)
	if err != nil {
		return 0, err
	}
	var size uint64
	if info, err := f.Stat(); err == nil {
		size = uint64(info.Size())
	}
	readable, err := sstable.NewSimpleReadable(&readAhead{File: f, buf: make([]byte, copyBuf)})
	if err != nil {
		f.Close()
		return size, err
	}
	r, err := sstable.NewReader(context.Background(), readable, opts.MakeReaderOptions())
	if err != nil {
		readable.Close()
		return size, err
	}
	defer r.Close()
	return size, r.ValidateBlockChecksums()
}

// readAhead serves small reads from a window it fills a copyBuf at a time.
// Validating block checksums reads a table front to back one block (4 KiB
// by default) at a time, and Pebble's simple readable has no read-ahead:
// one pread per block was most of a backup's validation time.
type readAhead struct {
	vfs.File
	mu  sync.Mutex
	buf []byte
	off int64 // of buf[0]
	n   int   // valid bytes in buf
}

func (r *readAhead) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > len(r.buf) {
		return r.File.ReadAt(p, off)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if off < r.off || off+int64(len(p)) > r.off+int64(r.n) {
		n, err := r.File.ReadAt(r.buf, off)
		if n == 0 && err != nil {
			r.n = 0
			return 0, err
		}
		r.off, r.n = off, n
	}
	n := copy(p, r.buf[off-r.off:r.n])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// checkLevels opens dir read-only (never the live store) and runs Pebble's
// CheckLevels.
func checkLevels(opts *pebble.Options, dir string) (int64, error) {
	ro := opts.Clone()
	ro.ReadOnly = true
	if ro.FS == nil {
		ro.FS = vfs.Default
	}
	var corrupt atomic.Pointer[pebble.DataCorruptionInfo]
	ro.EventListener = &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) { corrupt.CompareAndSwap(nil, &info) },
	}
	db, err := pebble.Open(dir, ro)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var st pebble.CheckLevelsStats
	if err := db.CheckLevels(&st); err != nil {
		return st.NumPoints, err
	}
	if info := corrupt.Load(); info != nil {
		// Pebble raises DataCorruption only for corruption errors; keep
		// the mark through the wrapping.
		return st.NumPoints, fmt.Errorf("%s: %w: %w", info.Path, pebble.ErrCorruption, info.Details)
	}
	return st.NumPoints, nil
}

// workDir creates a fresh directory under the work area, on the data
// directory's filesystem so that checkpoints can hard-link.
func (r *Registry) workDir(prefix string) (string, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	dir := filepath.Join(r.meta, "work", prefix+"-"+hex.EncodeToString(b[:]))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	return dir, nil
}
