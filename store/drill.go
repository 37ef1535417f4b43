package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sync/errgroup"

	"storekeeper/internal/durable"
)

// DrillReport is what a restore drill proved of one backup: it was
// fetched whole (every file's size and SHA-256), its entries were read
// back and fingerprinted, and Pebble opened it and passed CheckLevels.
type DrillReport struct {
	BackupID string    `json:"backup_id"`
	BackupAt time.Time `json:"backup_at"`
	Files    int       `json:"files"`
	Bytes    int64     `json:"bytes"`
	Points   int64     `json:"points"` // entries CheckLevels read
	// Fingerprint is the one recomputed from the restored files;
	// FingerprintChecked is false for a backup made before fingerprints
	// (nothing to compare with: the drill proves the rest).
	Fingerprint        string `json:"fingerprint,omitempty"`
	FingerprintChecked bool   `json:"fingerprint_checked"`
	// Log: a drill at a moment (DrillWith a Replay) replayed the commit
	// log onto the proven copy, and CheckLevels passed again.
	Log    *ReplayResult `json:"log,omitempty"`
	Timing DrillTiming   `json:"timing"`
	Took   time.Duration `json:"took"`
}

// DrillTiming breaks a drill down.
type DrillTiming struct {
	Fetch time.Duration `json:"fetch"` // fetching the files, each checked against its size and SHA-256
	Check time.Duration `json:"check"` // Pebble's open and CheckLevels, with the fingerprints recomputed meanwhile
}

// Drill restores backup m into a scratch directory, never touching the
// live store or its backups, and proves it usable: every file open gives
// is checked against the manifest's size and SHA-256 as it is written,
// then every sstable and WAL is read back through Pebble and
// fingerprinted (compared with the manifest's, file by file) while Pebble
// opens the copy read-only and runs CheckLevels. The scratch directory is removed
// at the end (and by Open after a crash). A backup that fails any of this
// is ErrBadBackup, naming the file.
func (s *Store) Drill(ctx context.Context, m BackupManifest, open func(context.Context, BackupFile) (io.ReadCloser, error)) (DrillReport, error) {
	return s.DrillWith(ctx, m, open, nil)
}

// DrillWith is Drill, then, with replay, a drill at a moment: the commit
// log is replayed onto the proven copy (as a restore to that moment
// would) and Pebble's CheckLevels runs again over the result.
func (s *Store) DrillWith(ctx context.Context, m BackupManifest, open func(context.Context, BackupFile) (io.ReadCloser, error), replay *Replay) (DrillReport, error) {
	start := time.Now()
	rep := DrillReport{BackupID: m.ID, BackupAt: m.CreatedAt, Files: len(m.Files)}
	if err := checkManifest(m, s.name, m.ID); err != nil {
		return rep, err
	}
	dir, err := s.reg.workDir("drill-" + s.name)
	if err != nil {
		return rep, err
	}
	fs := vfs.Default
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	var total int64
	for _, f := range m.Files {
		total += f.Size
	}
	rep.Bytes = total
	if err := s.reg.preflight("drill", dir, uint64(total)); err != nil {
		return rep, err
	}

	opts := s.opts.Clone()
	opts.FS = fs
	err = eachFile(ctx, m.Files, func(ctx context.Context, i int, f BackupFile) error {
		if err := fetchChecked(ctx, fs, filepath.Join(dir, f.Name), f, open); err != nil {
			return fmt.Errorf("drill %s of %s: %w", m.ID, s.name, err)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	rep.Timing.Fetch = time.Since(start)
	if err := durable.SyncDir(fs, dir); err != nil {
		return rep, err
	}

	// Pebble's CheckLevels reads the whole copy on one core; the files'
	// fingerprints are recomputed on the others meanwhile.
	t := time.Now()
	progress(ctx, "checking", 0, 0)
	var checkErr error
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		rep.Points, checkErr = checkLevels(opts, dir)
	}()
	fpErr := s.drillFingerprints(ctx, opts, fs, dir, m, &rep)
	<-checked
	rep.Timing.Check = time.Since(t)
	if fpErr != nil {
		return rep, fpErr
	}
	if checkErr != nil {
		return rep, fmt.Errorf("drill %s of %s: %w: Pebble's CheckLevels: %w", m.ID, s.name, ErrBadBackup, checkErr)
	}
	if replay != nil {
		progress(ctx, "replaying", 0, 0)
		rr, err := s.replayOnto(ctx, dir, replay)
		if err != nil {
			return rep, fmt.Errorf("drill of %s at %s: %w", s.name, replay.Branch.At.Format(time.RFC3339Nano), err)
		}
		rep.Log = &rr
		if rep.Points, err = checkLevels(opts, dir); err != nil {
			return rep, fmt.Errorf("drill of %s at %s: Pebble's CheckLevels after the replay: %w", s.name, replay.Branch.At.Format(time.RFC3339Nano), err)
		}
	}
	rep.Took = time.Since(start)
	s.log.Info("drill passed", "backup", m.ID, "files", rep.Files, "bytes", rep.Bytes, "points", rep.Points,
		"fingerprint_checked", rep.FingerprintChecked, "took", rep.Took)
	return rep, nil
}

// drillFingerprints reads every sstable and WAL of a drill's copy back
// through Pebble, compares each one's fingerprint with the manifest's and
// their combination with the backup's.
func (s *Store) drillFingerprints(ctx context.Context, opts *pebble.Options, fs vfs.FS, dir string, m BackupManifest, rep *DrillReport) error {
	got := make([]BackupFile, len(m.Files)) // with the fingerprints read back
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, f := range m.Files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			fp, has, err := fingerprintFile(opts, fs, filepath.Join(dir, f.Name))
			if err != nil {
				return fmt.Errorf("drill %s of %s: %w: %s does not read back: %w", m.ID, s.name, ErrBadBackup, f.Name, err)
			}
			if has && f.Fingerprint != "" && fp.String() != f.Fingerprint {
				return fmt.Errorf("drill %s of %s: %w: %s reads back with fingerprint %s, the manifest says %s",
					m.ID, s.name, ErrBadBackup, f.Name, fp, f.Fingerprint)
			}
			got[i] = f
			got[i].Fingerprint = ""
			if has {
				got[i].Fingerprint = fp.String()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if m.Fingerprint == "" {
		return nil
	}
	fp, err := combineFingerprints(got)
	if err != nil {
		return fmt.Errorf("drill %s of %s: %w: %w", m.ID, s.name, ErrBadBackup, err)
	}
	if fp != m.Fingerprint {
		return fmt.Errorf("drill %s of %s: %w: its files' fingerprints combine to %s, the manifest says %s",
			m.ID, s.name, ErrBadBackup, fp, m.Fingerprint)
	}
	rep.Fingerprint, rep.FingerprintChecked = fp, true
	return nil
}
