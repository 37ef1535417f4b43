package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"storekeeper/store"
)

// verifyConfig is what `chaosnode verify` was told.
type verifyConfig struct {
	data         string
	ledgers      []string
	stores       []string
	restores     string
	backups      string
	diskRestores bool
	pitr         string
}

func parseVerify(args []string, stderr io.Writer) (verifyConfig, error) {
	c := verifyConfig{diskRestores: true}
	var ledgers, stores listFlag
	fs := flag.NewFlagSet("chaosnode verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.data, "data", "", "the node's data directory (required)")
	fs.Var(&ledgers, "ledger", "the node's ledger; several: a,b or repeated (required)")
	fs.Var(&stores, "stores", "stores to check: a,b (required)")
	fs.StringVar(&c.restores, "restores", "", "successful restores, one per line: <store> <backup_at unixnano> <restore_finished unixnano>")
	fs.StringVar(&c.backups, "backups", "", "the node's backup directory: every backup of the stores is checked")
	fs.BoolVar(&c.diskRestores, "disk-restores", true, "also take as rollback windows the restores the data directory shows "+
		"(quarantined generations, a restore journal past its swap), reported in unreported_restores when --restores lacks them")
	fs.StringVar(&c.pitr, "pitr", "", "restores to a moment to check, one per line: <store> <moment unixnano> <requested unixnano> "+
		"(the store was restored to the moment by a request made then, and nothing restored it after)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.ledgers, c.stores = ledgers, stores
	switch {
	case c.data == "":
		return c, errors.New("--data is required")
	case len(c.ledgers) == 0:
		return c, errors.New("--ledger is required")
	case len(c.stores) == 0:
		return c, errors.New("--stores is required")
	}
	return c, nil
}

// storeReport is one store's part of the report. Key lists are sorted and
// never null.
type storeReport struct {
	Dir           string `json:"dir"` // the generation checked
	Intents       int    `json:"intents"`
	Failed        int    `json:"failed"` // keys whose commit returned an error
	AckedSynced   int    `json:"acked_synced"`
	AckedUnsynced int    `json:"acked_unsynced"`
	Present       int    `json:"present"`
	// MissingSynced: acknowledged synced writes that are gone with no
	// restore to explain it. Violations.
	MissingSynced []string `json:"missing_synced"`
	// RolledBack: acknowledged synced writes gone inside a restore's
	// rollback window.
	RolledBack int `json:"rolled_back"`
	// MissingUnsynced: acknowledged unsynced writes that are gone (a kill
	// may lose them), rollback windows included.
	MissingUnsynced int `json:"missing_unsynced"`
	// LostBeforePresent: acknowledged writes that are gone although a
	// later write of the same process run is present, outside any
	// rollback window: a hole in the WAL's prefix. Violations.
	LostBeforePresent []string `json:"lost_before_present"`
	// UnknownPresent: present w/ keys with no intent for this store in
	// the ledgers. Violations.
	UnknownPresent []string `json:"unknown_present"`
	// BadValues: present keys whose value is not the one their intent
	// says. Violations.
	BadValues   []string `json:"bad_values"`
	CheckLevels string   `json:"check_levels"` // "ok" or the error; not ok is a violation
	// RestoreWindows counts the rollback windows used: from --restores,
	// and from the data directory (--disk-restores).
	RestoreWindows     int `json:"restore_windows"`
	DiskRestoreWindows int `json:"disk_restore_windows"`
	// UnreportedRestores are restores the data directory shows that no
	// --restores line matches (by backup time): not violations, a lead.
	UnreportedRestores []string `json:"unreported_restores"`
	PendingRestore     string   `json:"pending_restore,omitempty"` // a journal past its swap: the backup id
	BackupsChecked     int      `json:"backups_checked"`
	BackupErrors       []string `json:"backup_errors"` // violations
	// PITR is the check of a restore to a moment (--pitr), when the store
	// had one.
	PITR       *pitrReport `json:"pitr,omitempty"`
	Violations int         `json:"violations"`
}

// pitrReport checks a restore of the store to a moment T, requested at R
// (> T), after which nothing restored it again. The store then holds what
// it held at T plus what was written after the restore, so:
//   - every write acknowledged and known shipped (a W line) by T is
//     present, unless a restore finished before R rolled it back
//     (Missing: violations);
//   - no write begun after T and acknowledged before R is present: it was
//     committed after the moment and before the restore's swap (After:
//     violations).
type pitrReport struct {
	At        time.Time `json:"at"`
	Requested time.Time `json:"requested"`
	Shipped   int       `json:"shipped"` // writes known shipped by T, not rolled back before R
	Excused   int       `json:"excused"` // writes known shipped by T that a restore before R rolled back
	Kept      int       `json:"kept"`    // writes begun by T present
	Dropped   int       `json:"dropped"` // writes begun after T, acknowledged before R, absent as they must be
	Missing   []string  `json:"missing"`
	After     []string  `json:"after"`
}

// pitrLine is one line of --pitr.
type pitrLine struct{ at, requested int64 }

// verifyReport is what verify prints.
type verifyReport struct {
	Stores map[string]*storeReport `json:"stores"`
	// LedgerBadLines are malformed ledger lines other than a run's torn
	// last line. Violations.
	LedgerBadLines []string `json:"ledger_bad_lines"`
	LedgerTorn     int      `json:"ledger_torn_lines"`
	Violations     int      `json:"violations"`
}

// window is a restore's rollback window: writes acknowledged in (from, to)
// may be gone.
type window struct {
	from, to int64
	disk     string // for windows found on disk: what showed it
}

func (w window) covers(at int64) bool { return w.from < at && at < w.to }

// verifyMain is `chaosnode verify`. Exit codes: 0 no violation, 1
// violations, 2 usage or I/O error.
func verifyMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseVerify(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "chaosnode verify:", err)
		}
		return 2
	}
	rep, err := verify(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "chaosnode verify:", err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintln(stderr, "chaosnode verify:", err)
		return 2
	}
	if rep.Violations > 0 {
		return 1
	}
	return 0
}

func verify(cfg verifyConfig) (*verifyReport, error) {
	if st, err := os.Stat(cfg.data); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--data %s: not a directory (%v)", cfg.data, err)
	}
	ld, err := readLedgers(cfg.ledgers)
	if err != nil {
		return nil, err
	}
	windows := map[string][]window{}
	if cfg.restores != "" {
		if windows, err = readRestores(cfg.restores); err != nil {
			return nil, err
		}
	}
	pitr := map[string]pitrLine{}
	if cfg.pitr != "" {
		if pitr, err = readPITR(cfg.pitr); err != nil {
			return nil, err
		}
	}
	rep := &verifyReport{Stores: map[string]*storeReport{}, LedgerBadLines: nonNil(ld.badLines), LedgerTorn: ld.torn}
	rep.Violations = len(ld.badLines)
	for _, name := range cfg.stores {
		sr := verifyStore(cfg, name, ld, windows[name], pitr)
		rep.Stores[name] = sr
		rep.Violations += sr.Violations
	}
	return rep, nil
}

// readRestores reads the --restores file: <store> <backup_at unixnano>
// <restore_finished unixnano> per line; blank lines and # comments are
// skipped.
func readRestores(path string) (map[string][]window, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--restores: %w", err)
	}
	defer f.Close()
	out := map[string][]window{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		var from, to int64
		var err1, err2 error
		if len(fs) == 3 {
			from, err1 = strconv.ParseInt(fs[1], 10, 64)
			to, err2 = strconv.ParseInt(fs[2], 10, 64)
		}
		if len(fs) != 3 || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--restores %s:%d: want <store> <backup_at unixnano> <restore_finished unixnano>, got %q", path, n, line)
		}
		out[fs[0]] = append(out[fs[0]], window{from: from, to: to})
	}
	return out, sc.Err()
}

// verifyStore checks one store and its backups.
func verifyStore(cfg verifyConfig, name string, ld *ledgerData, reported []window, pitr map[string]pitrLine) *storeReport {
	sr := &storeReport{MissingSynced: []string{}, LostBeforePresent: []string{}, UnknownPresent: []string{},
		BadValues: []string{}, UnreportedRestores: []string{}, BackupErrors: []string{}, RestoreWindows: len(reported)}
	dir, pending := liveDir(cfg.data, name)
	sr.Dir = dir
	windows := slices.Clone(reported)
	if cfg.diskRestores {
		disk := diskWindows(cfg, name)
		if pending != nil {
			sr.PendingRestore = pending.BackupID
			disk = append(disk, window{from: pending.BackupAt.UnixNano(), to: math.MaxInt64, disk: "pending restore of " + pending.BackupID})
		}
		sr.DiskRestoreWindows = len(disk)
		for _, d := range disk {
			if !slices.ContainsFunc(reported, func(r window) bool { return abs(r.from-d.from) < int64(time.Millisecond) }) {
				sr.UnreportedRestores = append(sr.UnreportedRestores, d.disk)
			}
		}
		windows = append(windows, disk...)
	}
	present, values, err := readStore(dir)
	if err != nil {
		sr.CheckLevels = err.Error()
	} else {
		sr.CheckLevels = "ok"
	}
	sr.Present = len(present)
	classify(sr, name, ld, present, values, windows)
	if p, ok := pitr[name]; ok {
		sr.PITR = checkPITR(name, ld, present, windows, p)
	}
	if cfg.backups != "" {
		sr.BackupsChecked, sr.BackupErrors = checkBackups(filepath.Join(cfg.backups, name, "backups"), name)
	}
	sr.Violations = len(sr.MissingSynced) + len(sr.LostBeforePresent) + len(sr.UnknownPresent) + len(sr.BadValues) + len(sr.BackupErrors)
	if sr.PITR != nil {
		sr.Violations += len(sr.PITR.Missing) + len(sr.PITR.After)
	}
	if sr.CheckLevels != "ok" {
		sr.Violations++
	}
	return sr
}

// classify checks the ledger's keys of store name against the keys
// present.
func classify(sr *storeReport, name string, ld *ledgerData, present map[string]bool, values map[string]string, windows []window) {
	windowed := func(at int64) bool { return slices.ContainsFunc(windows, func(w window) bool { return w.covers(at) }) }
	// The highest seq present per process run: within a run a store's
	// batches commit one after the other, so every write acknowledged
	// before it must be present too (Pebble recovers a prefix of the WAL).
	highest := map[int]uint64{}
	for key := range present {
		if e := ld.keys[key]; e != nil && e.intent && e.store == name && e.seq > highest[e.run] {
			highest[e.run] = e.seq
		}
	}
	for key, e := range ld.keys {
		if e.store != name {
			continue
		}
		if e.intent {
			sr.Intents++
		}
		if e.failed {
			sr.Failed++
		}
		if !e.acked {
			continue
		}
		if e.sync {
			sr.AckedSynced++
		} else {
			sr.AckedUnsynced++
		}
		if present[key] {
			continue
		}
		switch {
		case e.sync && windowed(e.ackAt):
			sr.RolledBack++
		case e.sync:
			sr.MissingSynced = append(sr.MissingSynced, key)
		default:
			sr.MissingUnsynced++
			if !windowed(e.ackAt) && e.seq < highest[e.run] {
				sr.LostBeforePresent = append(sr.LostBeforePresent, key)
			}
		}
	}
	for key := range present {
		e := ld.keys[key]
		if e == nil || !e.intent || e.store != name {
			sr.UnknownPresent = append(sr.UnknownPresent, key)
			continue
		}
		if values[key] != writeValue(e.seq, e.intentAt) {
			sr.BadValues = append(sr.BadValues, key)
		}
	}
	slices.Sort(sr.MissingSynced)
	slices.Sort(sr.LostBeforePresent)
	slices.Sort(sr.UnknownPresent)
	slices.Sort(sr.BadValues)
}

// readPITR reads the --pitr file: <store> <moment unixnano> <requested
// unixnano> per line; blank lines and # comments are skipped.
func readPITR(path string) (map[string]pitrLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--pitr: %w", err)
	}
	out := map[string]pitrLine{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		var p pitrLine
		var err1, err2 error
		if len(fs) == 3 {
			p.at, err1 = strconv.ParseInt(fs[1], 10, 64)
			p.requested, err2 = strconv.ParseInt(fs[2], 10, 64)
		}
		if len(fs) != 3 || err1 != nil || err2 != nil || p.requested <= p.at {
			return nil, fmt.Errorf("--pitr %s:%d: want <store> <moment unixnano> <requested unixnano>, requested after the moment; got %q", path, n+1, line)
		}
		out[fs[0]] = p
	}
	return out, nil
}

// checkPITR checks what a restore of store name to a moment left (see
// pitrReport). windows are the store's rollback windows; only those of
// restores that finished before the request excuse a missing write (the
// moment's own restore is one of them otherwise).
func checkPITR(name string, ld *ledgerData, present map[string]bool, windows []window, p pitrLine) *pitrReport {
	r := &pitrReport{At: time.Unix(0, p.at).UTC(), Requested: time.Unix(0, p.requested).UTC(), Missing: []string{}, After: []string{}}
	var before []window
	for _, w := range windows {
		if w.to < p.requested {
			before = append(before, w)
		}
	}
	rolledBack := func(at int64) bool { return slices.ContainsFunc(before, func(w window) bool { return w.covers(at) }) }
	for key, e := range ld.keys {
		if e.store != name || !e.intent {
			continue
		}
		if e.intentAt <= p.at {
			if present[key] {
				r.Kept++
			}
			if at, ok := ld.shippedAt(e); ok && e.acked && at <= p.at {
				switch {
				case rolledBack(e.ackAt):
					r.Excused++
				case present[key]:
					r.Shipped++
				default:
					r.Shipped++
					r.Missing = append(r.Missing, key)
				}
			}
			continue
		}
		if e.acked && e.ackAt < p.requested {
			if present[key] {
				r.After = append(r.After, key)
			} else {
				r.Dropped++
			}
		}
	}
	slices.Sort(r.Missing)
	slices.Sort(r.After)
	return r
}

// journal is the part of store's restore journal (store/restore.go,
// .storekeeper/restore/<store>.json) that says which generation is live.
type journal struct {
	BackupID  string    `json:"backup_id"`
	BackupAt  time.Time `json:"backup_at"`
	Phase     string    `json:"phase"`
	StagedIno uint64    `json:"staged_ino"`
}

// liveDir is the store's live generation as store.Open would settle it:
// <data>/<store>, unless a restore's journal reached its swap and the
// swap did not happen yet, in which case Open would swap the staged copy
// in: that copy is the store, and the journal is returned.
func liveDir(data, name string) (string, *journal) {
	live := filepath.Join(data, name)
	b, err := os.ReadFile(filepath.Join(data, store.MetaDir, "restore", name+".json"))
	if err != nil {
		return live, nil
	}
	var j journal
	if json.Unmarshal(b, &j) != nil || j.Phase != "swap" {
		return live, nil // Open rolls it back: the live directory stays
	}
	staged := filepath.Join(data, store.MetaDir, "restore", name+".staged")
	if fi, err := os.Stat(live); err == nil && fi.Sys().(*syscall.Stat_t).Ino == j.StagedIno {
		return live, &j // swapped already
	}
	if _, err := os.Stat(staged); err == nil {
		return staged, &j
	}
	return live, &j
}

// diskWindows are the rollback windows of the restores whose replaced
// generations are in quarantine (<time>-before-<backup id>, the time the
// generation was moved there): from the backup's time (its manifest's,
// or the id's to the millisecond when it was pruned) to that time.
// Quarantine keeps the last few generations only.
func diskWindows(cfg verifyConfig, name string) []window {
	entries, _ := os.ReadDir(filepath.Join(cfg.data, store.MetaDir, "quarantine", name))
	var out []window
	const stamp = "20060102T150405.000Z"
	for _, e := range entries {
		ts, id, ok := strings.Cut(e.Name(), "-before-")
		to, err := time.Parse(stamp, ts)
		if !ok || err != nil || len(id) < len(stamp) {
			continue
		}
		from, err := time.Parse(stamp, id[:len(stamp)])
		if err != nil {
			continue
		}
		if cfg.backups != "" {
			if m, err := readManifest(filepath.Join(cfg.backups, name, "backups", id)); err == nil {
				from = m.CreatedAt
			}
		}
		out = append(out, window{from: from.UnixNano(), to: to.UnixNano(), disk: "quarantine/" + name + "/" + e.Name()})
	}
	return out
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// openReadOnly opens a Pebble directory read-only, with an event listener
// that records corruption instead of Pebble's default, which exits.
func openReadOnly(dir string) (*pebble.DB, *atomic.Pointer[pebble.DataCorruptionInfo], error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, nil, fmt.Errorf("%s: not a directory (%v)", dir, err)
	}
	corrupt := &atomic.Pointer[pebble.DataCorruptionInfo]{}
	opts := &pebble.Options{ReadOnly: true, Logger: quietLogger{}, EventListener: &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) { corrupt.CompareAndSwap(nil, &info) },
	}}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s read-only: %w", dir, err)
	}
	return db, corrupt, nil
}

// checkLevels runs Pebble's CheckLevels on db; corruption reported
// through the listener fails it too.
func checkLevels(db *pebble.DB, corrupt *atomic.Pointer[pebble.DataCorruptionInfo]) error {
	if err := db.CheckLevels(nil); err != nil {
		return fmt.Errorf("CheckLevels: %w", err)
	}
	if info := corrupt.Load(); info != nil {
		return fmt.Errorf("CheckLevels: corruption in %s: %v", info.Path, info.Details)
	}
	return nil
}

// readStore opens dir read-only, runs CheckLevels and returns the w/ keys
// with their values. Keys are read even when CheckLevels fails, as far as
// they can be.
func readStore(dir string) (map[string]bool, map[string]string, error) {
	present, values := map[string]bool{}, map[string]string{}
	db, corrupt, err := openReadOnly(dir)
	if err != nil {
		return present, values, err
	}
	defer db.Close()
	checkErr := checkLevels(db, corrupt)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte("w/"), UpperBound: []byte("w0")})
	if err != nil {
		return present, values, errors.Join(checkErr, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		present[string(it.Key())] = true
		values[string(it.Key())] = string(it.Value())
	}
	return present, values, errors.Join(checkErr, it.Close(), corruptErr(corrupt))
}

func corruptErr(c *atomic.Pointer[pebble.DataCorruptionInfo]) error {
	if info := c.Load(); info != nil {
		return fmt.Errorf("corruption in %s: %v", info.Path, info.Details)
	}
	return nil
}

// checkBackups checks every published backup under root
// (<backups>/<store>/backups/<id>/, store/backup.go): each file against
// the manifest's size and SHA-256, then the backup opened read-only in
// place with Pebble and CheckLevels. It returns how many it checked and
// the errors, each naming its backup.
func checkBackups(root, name string) (int, []string) {
	errs := []string{}
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return 0, errs
	}
	if err != nil {
		return 0, append(errs, err.Error())
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n++
		if err := checkBackup(filepath.Join(root, e.Name()), name, e.Name()); err != nil {
			errs = append(errs, e.Name()+": "+err.Error())
		}
	}
	return n, errs
}

func checkBackup(dir, name, id string) error {
	m, err := readManifest(dir)
	if err != nil {
		return err
	}
	if m.ID != id || m.Store != name {
		return fmt.Errorf("manifest names backup %q of store %q", m.ID, m.Store)
	}
	for _, f := range m.Files {
		sum, size, err := hashFile(filepath.Join(dir, f.Name))
		if err != nil {
			return err
		}
		if sum != f.SHA256 || size != f.Size {
			return fmt.Errorf("%s has %d bytes with sha256 %s, manifest says %d bytes with %s", f.Name, size, sum, f.Size, f.SHA256)
		}
	}
	db, corrupt, err := openReadOnly(dir)
	if err != nil {
		return err
	}
	defer db.Close()
	return checkLevels(db, corrupt)
}

// readManifest reads a backup's manifest (store's STOREKEEPER-BACKUP.json).
func readManifest(dir string) (store.BackupManifest, error) {
	var m store.BackupManifest
	b, err := os.ReadFile(filepath.Join(dir, "STOREKEEPER-BACKUP.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("malformed manifest: %w", err)
	}
	return m, nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// quietLogger drops Pebble's informational lines and writes its errors to
// stderr. Pebble calls Fatalf only on a failed write, which a read-only
// open does not make; it exits 2 (an I/O error) if it ever does.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: fatal: "+format+"\n", args...)
	os.Exit(2)
}
