package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"text/tabwriter"

	"storekeeper/store"
)

// demoStores describes the churn each demo store gets: keys written, value
// size, and the share of keys overwritten and deleted afterwards.
var demoStores = []struct {
	name              string
	keys, size        int
	overwrite, delete int // every Nth key
}{
	{"orders", 40000, 256, 2, 5},
	{"sessions", 60000, 128, 1, 3},
	{"metrics", 25000, 512, 4, 10},
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./data", "directory that holds the stores")
	backupDir := fs.String("backup-dir", "./backups", "directory that holds the backups (not inside --data-dir)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	names := make([]string, len(demoStores))
	for i, d := range demoStores {
		names[i] = d.name
	}
	reg, err := store.Open(store.Config{
		DataDir:   *dataDir,
		BackupDir: *backupDir,
		Stores:    names,
		Logger:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fmt.Fprintf(stderr, "storekeeper demo: %v\n", err)
		return 1
	}
	defer reg.Close()

	fmt.Fprintf(stdout, "storekeeper demo in %s\n\nwriting churn (writes, overwrites, deletes, a range delete)...\n", reg.DataDir())
	for _, d := range demoStores {
		s, err := reg.Store(d.name)
		if err == nil {
			err = demoChurn(s, d.keys, d.size, d.overwrite, d.delete)
		}
		if err != nil {
			fmt.Fprintf(stderr, "storekeeper demo: %s: %v\n", d.name, err)
			return 1
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
			fmt.Fprintf(stderr, "storekeeper demo: compact %s: %v\n", name, err)
			return 1
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
			fmt.Fprintf(stderr, "storekeeper demo: backup %s: %v\n", name, err)
			return 1
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
		fmt.Fprintf(stderr, "storekeeper demo: %v\n", err)
		return 1
	}
	res, err := s.Restore(ctx, "")
	if err != nil {
		fmt.Fprintf(stderr, "storekeeper demo: restore orders: %v\n", err)
		return 1
	}
	_, err = s.Get([]byte("written-after-the-backup"))
	fmt.Fprintf(stdout, "\nrestored orders from %s in %s: writes after %s are gone (lookup of one: %v);\nthe replaced generation is kept in %s\n",
		res.BackupID, res.Took.Round(1e6), res.BackupAt.Format("15:04:05.000"), err, res.Quarantine)
	return 0
}

func demoChurn(s *store.Store, keys, size, overwrite, del int) error {
	rng := rand.New(rand.NewPCG(uint64(keys), uint64(size)))
	val := make([]byte, size)
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
		for i := 0; i < keys; i += del {
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
