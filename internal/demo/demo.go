// Package demo makes the demo stores: the `storekeeper demo` command, which
// shows the store engine on its own, and the stores, first backups and
// light writer of `storekeeper serve --demo` (make run).
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"text/tabwriter"

	"storekeeper/jobs"
	"storekeeper/store"
)

// A Store is a demo store and the churn it gets: keys written, value size,
// and the share of keys overwritten and deleted afterwards.
type Store struct {
	Name              string
	Keys, Size        int
	Overwrite, Delete int // every Nth key
}

// Stores are the demo stores.
var Stores = []Store{
	{"orders", 40000, 256, 2, 5},
	{"sessions", 60000, 128, 1, 3},
	{"metrics", 25000, 512, 4, 10},
}

// Names are the names of Stores.
func Names() []string {
	names := make([]string, len(Stores))
	for i, d := range Stores {
		names[i] = d.Name
	}
	return names
}

// Schedules replace the daily defaults under --demo (unless a --schedule-*
// flag or variable says otherwise), so the history fills while someone
// looks at it.
var Schedules = map[jobs.Kind]string{
	jobs.KindCompact: "@every 10m",
	jobs.KindBackup:  "@every 15m",
	jobs.KindVerify:  "@every 20m",
	jobs.KindDrill:   "@every 30m",
}

// Run is `storekeeper demo`: it creates the demo stores in dataDir with
// churn, shows their stats, compacts, verifies and backs them up into
// backupDir, restores one, and prints the numbers to stdout.
func Run(ctx context.Context, dataDir, backupDir string, stdout, stderr io.Writer) error {
	reg, err := store.Open(store.Config{
		DataDir:   dataDir,
		BackupDir: backupDir,
		Stores:    Names(),
		Logger:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	defer reg.Close()

	fmt.Fprintf(stdout, "storekeeper demo in %s\n\nwriting churn (writes, overwrites, deletes, a range delete)...\n", reg.DataDir())
	for _, d := range Stores {
		s, err := reg.Store(d.Name)
		if err == nil {
			err = churn(s, d)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
	}
	fmt.Fprintln(stdout, "\nbefore compaction:")
	printStats(stdout, reg)

	fmt.Fprintln(stdout, "\ncompacting (the rule decides) and verifying:")
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tOUTCOME\tBEFORE\tAFTER\tTOOK\tREASON\tVERIFY")
	for _, name := range reg.Names() {
		s, _ := reg.Store(name)
		res, err := s.Compact(ctx, store.CompactOptions{})
		if err != nil {
			return fmt.Errorf("compact %s: %w", name, err)
		}
		var verify string
		if v, err := s.Verify(ctx, store.VerifyOptions{Deep: true}); err != nil {
			verify = err.Error()
		} else {
			verify = fmt.Sprintf("ok: %d files, %d keys checked", v.Files, v.Points)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, res.Outcome, mib(res.BytesBefore), mib(res.BytesAfter),
			res.Duration.Round(1e6), res.Decision.Reason, verify)
	}
	tw.Flush()
	fmt.Fprintln(stdout, "\nafter compaction:")
	printStats(stdout, reg)

	fmt.Fprintf(stdout, "\nbacking up into %s (content-addressed: unchanged tables are shared with earlier backups):\n", reg.BackupDir())
	tw = tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tBACKUP\tFILES\tCOPIED\tSHARED\tSIZE\tNEW\tKEYS~\tTOOK\tKEPT")
	for _, name := range reg.Names() {
		s, _ := reg.Store(name)
		res, err := s.Backup(ctx)
		if err != nil {
			return fmt.Errorf("backup %s: %w", name, err)
		}
		all, _ := s.Backups()
		b := res.Backup
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%d\n", name, b.ID, len(b.Files), res.Copied, res.Shared,
			mib(uint64(b.Bytes)), mib(uint64(b.NewBytes)), b.Keys, res.Took.Round(1e6), len(all))
	}
	tw.Flush()

	// A restore rolls back whatever was written after the backup.
	s, _ := reg.Store("orders")
	if err := s.Set([]byte("written-after-the-backup"), []byte("x")); err != nil {
		return err
	}
	res, err := s.Restore(ctx, "")
	if err != nil {
		return fmt.Errorf("restore orders: %w", err)
	}
	_, err = s.Get([]byte("written-after-the-backup"))
	fmt.Fprintf(stdout, "\nrestored orders from %s in %s: writes after %s are gone (lookup of one: %v);\nthe replaced generation is kept in %s\n",
		res.BackupID, res.Took.Round(1e6), res.BackupAt.Format("15:04:05.000"), err, res.Quarantine)
	return nil
}

// churn writes d's keys, overwrites and deletes some of them, and deletes
// a range: garbage for a compaction to reclaim.
func churn(s *store.Store, d Store) error {
	keys, overwrite := d.Keys, d.Overwrite
	rng := rand.New(rand.NewPCG(uint64(keys), uint64(d.Size)))
	val := make([]byte, d.Size)
	key := func(i int) []byte { return fmt.Appendf(nil, "%s-%08d", s.Name(), i) }
	for pass, step := range []int{1, overwrite} {
		for lo := 0; lo < keys; lo += 1000 * step {
			err := s.Update(func(b *store.Batch) error {
				for i := lo; i < min(keys, lo+1000*step); i += step {
					for j := range val {
						val[j] = byte('a' + rng.IntN(26))
					}
					if err := b.Set(key(i), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("write pass %d: %w", pass, err)
			}
		}
	}
	return s.Update(func(b *store.Batch) error {
		for i := 0; i < keys; i += d.Delete {
			if err := b.Delete(key(i)); err != nil {
				return err
			}
		}
		return b.DeleteRange(key(keys/2), key(keys/2+keys/20))
	})
}

func printStats(w io.Writer, reg *store.Registry) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tSTATE\tDISK\tLIVE\tKEYS~\tREAD AMP\tL0 SUBLEVELS\tTOMBSTONES\tRECLAIMABLE~\tTABLES BY LEVEL")
	for _, name := range reg.Names() {
		s, _ := reg.Store(name)
		st := s.Stats()
		levels := ""
		for _, l := range st.Levels {
			if l.Tables > 0 {
				levels += fmt.Sprintf("L%d:%d ", l.Level, l.Tables)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", st.Name, st.State, mib(st.DiskBytes), mib(st.LiveBytes),
			st.EstimatedKeys, st.ReadAmp, st.L0Sublevels, st.Tombstones, mib(st.ReclaimableBytes), levels)
	}
	tw.Flush()
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
