package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// A backup's fingerprint is a digest of what it holds, not of how its
// bytes lie: every entry of every sstable (point keys with their sequence
// number and kind, and values; range deletions; range keys) and every
// record of its WAL, each hashed on its own and combined so that order
// does not count. A table's part depends on the table's content only, so
// it is computed once per table, as the backup copies it, and kept by
// content hash beside the hash cache: an incremental backup fingerprints
// only its new tables. A drill recomputes it from the files it fetched
// and compares, which proves more than the files' hashes do: that what
// the manifest lists is what Pebble reads back, entry by entry.
//
// It is three 64-bit words: the number of entries, the sum of their
// hashes and the xor of a second mix of them, written "fp1:n:sum:xor".

type fingerprint struct{ n, sum, xor uint64 }

const fingerprintVersion = "fp1"

func (f *fingerprint) addHash(h uint64) {
	f.n++
	f.sum += h
	// A second, independent mix, so entries that cancel in the sum do not
	// also cancel here (splitmix64's finaliser).
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	f.xor ^= h
}

func (f *fingerprint) merge(g fingerprint) {
	f.n += g.n
	f.sum += g.sum
	f.xor ^= g.xor
}

func (f fingerprint) String() string {
	return fmt.Sprintf("%s:%d:%016x:%016x", fingerprintVersion, f.n, f.sum, f.xor)
}

func parseFingerprint(s string) (fingerprint, error) {
	p := strings.Split(s, ":")
	if len(p) != 4 || p[0] != fingerprintVersion {
		return fingerprint{}, fmt.Errorf("not a fingerprint: %q", s)
	}
	var f fingerprint
	var err error
	if f.n, err = strconv.ParseUint(p[1], 10, 64); err == nil {
		if f.sum, err = strconv.ParseUint(p[2], 16, 64); err == nil {
			f.xor, err = strconv.ParseUint(p[3], 16, 64)
		}
	}
	if err != nil {
		return fingerprint{}, fmt.Errorf("not a fingerprint: %q", s)
	}
	return f, nil
}

// entryHasher hashes one entry: a tag, then length-prefixed fields.
type entryHasher struct {
	d   *xxhash.Digest
	buf [binary.MaxVarintLen64]byte
}

func newEntryHasher() *entryHasher { return &entryHasher{d: xxhash.New()} }

func (e *entryHasher) start(tag byte) { e.d.Reset(); _, _ = e.d.Write([]byte{tag}) }

func (e *entryHasher) field(b []byte) {
	n := binary.PutUvarint(e.buf[:], uint64(len(b)))
	_, _ = e.d.Write(e.buf[:n])
	_, _ = e.d.Write(b)
}

func (e *entryHasher) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:8], v)
	_, _ = e.d.Write(e.buf[:8])
}

// fingerprintTable reads the sstable at path through Pebble, which checks
// every block it reads against its checksum, and returns its fingerprint.
func fingerprintTable(opts *pebble.Options, fs vfs.FS, path string) (fingerprint, error) {
	var fp fingerprint
	f, err := fs.Open(path)
	if err != nil {
		return fp, err
	}
	readable, err := sstable.NewSimpleReadable(&readAhead{File: f, buf: make([]byte, copyBuf)})
	if err != nil {
		f.Close()
		return fp, err
	}
	r, err := sstable.NewReader(context.Background(), readable, opts.MakeReaderOptions())
	if err != nil {
		readable.Close()
		return fp, err
	}
	defer r.Close()
	h := newEntryHasher()

	// Values in separate blob files are taken as their handles: a table's
	// fingerprint stays a function of the table alone. A compaction
	// iterator reads the blocks in order into a few reused buffers (the
	// plain iterator allocates every block it reads: at backup rates the
	// allocations and the GC they cause cost more than the hashing).
	var pool block.BufferPool
	pool.Init(4)
	defer pool.Release() // after the iterator's Close, below
	env := sstable.ReadEnv{Block: block.ReadEnv{BufferPool: &pool}}
	it, err := r.NewCompactionIter(sstable.NoTransforms, env, sstable.MakeTrivialReaderProvider(r), sstable.DebugHandlesBlobContext)
	if err != nil {
		return fp, err
	}
	var vbuf []byte
	for kv := it.First(); kv != nil; kv = it.Next() {
		h.start('p')
		h.field(kv.K.UserKey)
		h.u64(uint64(kv.K.Trailer))
		v := kv.V.ValueOrHandle()
		if !kv.V.IsBlobValueHandle() {
			if v, _, err = kv.V.Value(vbuf[:0]); err != nil {
				it.Close()
				return fp, err
			}
		}
		h.field(v)
		fp.addHash(h.d.Sum64())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fp, err
	}

	ctx := context.Background()
	rd, err := r.NewRawRangeDelIter(ctx, sstable.NoFragmentTransforms, sstable.NoReadEnv)
	if err != nil {
		return fp, err
	}
	if rd != nil {
		for s, err := rd.First(); s != nil || err != nil; s, err = rd.Next() {
			if err != nil {
				rd.Close()
				return fp, err
			}
			for _, k := range s.Keys {
				h.start('d')
				h.field(s.Start)
				h.field(s.End)
				h.u64(uint64(k.Trailer))
				fp.addHash(h.d.Sum64())
			}
		}
		rd.Close()
	}
	rk, err := r.NewRawRangeKeyIter(ctx, sstable.NoFragmentTransforms, sstable.NoReadEnv)
	if err != nil {
		return fp, err
	}
	if rk != nil {
		for s, err := rk.First(); s != nil || err != nil; s, err = rk.Next() {
			if err != nil {
				rk.Close()
				return fp, err
			}
			for _, k := range s.Keys {
				h.start('r')
				h.field(s.Start)
				h.field(s.End)
				h.u64(uint64(k.Trailer))
				h.field(k.Suffix)
				h.field(k.Value)
				fp.addHash(h.d.Sum64())
			}
		}
		rk.Close()
	}
	return fp, nil
}

// fingerprintWAL hashes each record (one committed batch) of the WAL at
// path, up to its end as Pebble's replay finds it: a torn or recycled
// tail ends the log, as it does when Pebble opens it.
func fingerprintWAL(fs vfs.FS, path string) (fingerprint, error) {
	var fp fingerprint
	num, ok := walNumber(filepath.Base(path))
	if !ok {
		return fp, fmt.Errorf("%s: not a WAL file name", path)
	}
	f, err := fs.Open(path)
	if err != nil {
		return fp, err
	}
	defer f.Close()
	rr := newRecordReader(f, num)
	h := newEntryHasher()
	for {
		rec, err := rr.Next()
		if err != nil {
			if walEnd(err) {
				return fp, nil
			}
			return fp, err
		}
		h.start('w')
		n, err := io.Copy(h.d, rec)
		if err != nil {
			if walEnd(err) {
				return fp, nil // a record torn at the tail is not replayed
			}
			return fp, err
		}
		h.u64(uint64(n))
		fp.addHash(h.d.Sum64())
	}
}

// walEnd reports whether err is how a WAL ends (see Pebble's replay).
func walEnd(err error) bool {
	return err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, record.ErrUnexpectedEOF) ||
		errors.Is(err, record.ErrZeroedChunk) || errors.Is(err, record.ErrInvalidChunk)
}

// walNumber parses a WAL file name, NNNNNN.log.
func walNumber(name string) (uint64, bool) {
	num, ok := strings.CutSuffix(name, ".log")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	return n, err == nil
}

// newRecordReader calls record.NewReader, whose log number parameter has
// a type from Pebble's internal packages that cannot be named here.
func newRecordReader(r io.Reader, num uint64) *record.Reader {
	fn := reflect.ValueOf(record.NewReader)
	out := fn.Call([]reflect.Value{reflect.ValueOf(&r).Elem(), reflect.ValueOf(num).Convert(fn.Type().In(1))})
	return out[0].Interface().(*record.Reader)
}

// fingerprintFile fingerprints one file of a backup: sstables and WALs
// have one; other files (MANIFEST, OPTIONS, markers) describe the layout
// rather than the content and have none (false).
func fingerprintFile(opts *pebble.Options, fs vfs.FS, path string) (fingerprint, bool, error) {
	name := filepath.Base(path)
	switch {
	case strings.HasSuffix(name, ".sst"):
		fp, err := fingerprintTable(opts, fs, path)
		return fp, true, err
	case strings.HasSuffix(name, ".log"):
		if _, ok := walNumber(name); ok {
			fp, err := fingerprintWAL(fs, path)
			return fp, true, err
		}
	}
	return fingerprint{}, false, nil
}

// combineFingerprints is the backup's fingerprint from its files'.
func combineFingerprints(files []BackupFile) (string, error) {
	var all fingerprint
	for _, f := range files {
		if f.Fingerprint == "" {
			continue
		}
		fp, err := parseFingerprint(f.Fingerprint)
		if err != nil {
			return "", fmt.Errorf("%s: %w", f.Name, err)
		}
		all.merge(fp)
	}
	return all.String(), nil
}
