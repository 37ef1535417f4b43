package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// The ledger is a node's record of its writes, one file per node outside
// the data directory, appended with O_APPEND and one write(2) per line, so
// a killed process leaves at most its last line torn. Lines:
//
//	S <node> <pid> <unixnano>                   a process started writing (a "run")
//	I <store> <key> <sync 0|1> <unixnano>       about to commit key (before the commit)
//	A <store> <key> <sync 0|1> <unixnano>       the commit of key returned nil
//	E <store> <key> <code>                      the commit of key failed: unavailable, not_owner, closed, error
//	W <store> <key> <unixnano>                  Store.WaitShipped returned: every write of this run up to key is on every target
//
// Keys are w/<node>/<store>/<seq>, seq a decimal number padded to 12
// digits, never reused by the node: a run starts after the highest seq its
// ledger holds. One goroutine writes each store, so within a run a store's
// batches commit in seq order.

// ledger appends lines to a node's ledger file.
type ledger struct {
	mu sync.Mutex
	f  *os.File
}

// openLedger opens path for appending, creating it. A torn last line (a
// process killed inside a write) is ended with a newline first, so the
// next line starts on its own.
func openLedger(path string) (*ledger, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if torn, err := tornTail(path); err != nil {
		f.Close()
		return nil, err
	} else if torn {
		if _, err := f.Write([]byte("\n")); err != nil {
			f.Close()
			return nil, err
		}
	}
	return &ledger{f: f}, nil
}

// tornTail reports whether the file at path is not empty and does not end
// with a newline.
func tornTail(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return false, err
	}
	var b [1]byte
	if _, err := f.ReadAt(b[:], st.Size()-1); err != nil {
		return false, err
	}
	return b[0] != '\n', nil
}

// line appends one line (which must end with a newline) in one write.
func (l *ledger) line(s string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.f.Write([]byte(s))
	return err
}

func (l *ledger) Close() error { return l.f.Close() }

// writeKey is the key of a node's write number seq to store.
func writeKey(node, store string, seq uint64) string {
	return fmt.Sprintf("w/%s/%s/%012d", node, store, seq)
}

// parseKey splits a write key into node, store and seq.
func parseKey(key string) (node, store string, seq uint64, ok bool) {
	parts := strings.Split(key, "/")
	if len(parts) != 4 || parts[0] != "w" || parts[1] == "" || parts[2] == "" {
		return "", "", 0, false
	}
	seq, err := strconv.ParseUint(parts[3], 10, 64)
	if err != nil {
		return "", "", 0, false
	}
	return parts[1], parts[2], seq, true
}

// writeValue is the value written under a key: its seq and the intent's
// time.
func writeValue(seq uint64, at int64) string { return fmt.Sprintf("%d %d", seq, at) }

// entry is what the ledgers say about one key.
type entry struct {
	store    string
	seq      uint64
	run      int // which process run wrote it (S lines); unique across ledger files
	intent   bool
	intentAt int64
	sync     bool
	acked    bool
	ackAt    int64
	failed   bool
}

// ledgerData is the ledgers read back.
type ledgerData struct {
	keys map[string]*entry
	// badLines are malformed lines that are not a torn last line of a run
	// (the last line of a file, or one just before an S line).
	badLines []string
	torn     int // torn last lines, allowed
	// marks are the W lines: per run and store, the seqs known shipped
	// and when, in ledger order.
	marks map[runStore][]shipMark
}

type runStore struct {
	run   int
	store string
}

type shipMark struct {
	seq uint64
	at  int64
}

// shippedAt is when the ledgers say key e was known to be on every
// target: the first W line of its run and store whose seq is at least
// its own; false when none is.
func (d *ledgerData) shippedAt(e *entry) (int64, bool) {
	for _, m := range d.marks[runStore{e.run, e.store}] {
		if m.seq >= e.seq {
			return m.at, true
		}
	}
	return 0, false
}

// readLedgers reads every ledger in paths.
func readLedgers(paths []string) (*ledgerData, error) {
	d := &ledgerData{keys: map[string]*entry{}, marks: map[runStore][]shipMark{}}
	run := 0
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		run++ // lines before the first S line of a file are a run of their own
		err = d.read(f, p, &run)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read ledger %s: %w", p, err)
		}
	}
	return d, nil
}

func (d *ledgerData) read(r io.Reader, name string, run *int) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	pending := "" // a malformed line: torn if the run ends after it
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "" {
			continue
		}
		fs := strings.Fields(line)
		if pending != "" {
			if len(fs) > 0 && fs[0] == "S" {
				d.torn++
			} else {
				d.badLines = append(d.badLines, pending)
			}
			pending = ""
		}
		if len(fs) > 0 && fs[0] == "S" {
			*run++
			continue
		}
		if !d.apply(fs, *run) {
			pending = fmt.Sprintf("%s:%d: %q", name, n, line)
		}
	}
	if pending != "" {
		d.torn++
	}
	return sc.Err()
}

// apply records one I, A or E line; false when it is malformed.
func (d *ledgerData) apply(fs []string, run int) bool {
	if len(fs) < 4 {
		return false
	}
	_, store, seq, ok := parseKey(fs[2])
	if !ok || store != fs[1] {
		return false
	}
	var at int64
	switch fs[0] {
	case "W":
		if len(fs) != 4 {
			return false
		}
		at, err := strconv.ParseInt(fs[3], 10, 64)
		if err != nil {
			return false
		}
		k := runStore{run, store}
		if d.marks == nil {
			d.marks = map[runStore][]shipMark{}
		}
		d.marks[k] = append(d.marks[k], shipMark{seq: seq, at: at})
		return true
	case "I", "A":
		if len(fs) != 5 || (fs[3] != "0" && fs[3] != "1") {
			return false
		}
		var err error
		if at, err = strconv.ParseInt(fs[4], 10, 64); err != nil {
			return false
		}
	case "E":
	default:
		return false
	}
	e := d.keys[fs[2]]
	if e == nil {
		e = &entry{store: store, seq: seq, run: run}
		d.keys[fs[2]] = e
	}
	switch fs[0] {
	case "I":
		e.intent, e.intentAt, e.sync, e.run = true, at, fs[3] == "1", run
	case "A":
		e.acked, e.ackAt, e.sync = true, at, fs[3] == "1"
	case "E":
		e.failed = true
	}
	return true
}

// lastSeqs returns, per store, the highest seq of node's keys in the
// ledger at path (0 when none, or no ledger yet).
func lastSeqs(path, node string) (map[string]uint64, error) {
	out := map[string]uint64{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 || (fs[0] != "I" && fs[0] != "A" && fs[0] != "E") {
			continue
		}
		if n, store, seq, ok := parseKey(fs[2]); ok && n == node && seq > out[store] {
			out[store] = seq
		}
	}
	return out, sc.Err()
}
