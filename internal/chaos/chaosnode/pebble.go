package main

import (
	"fmt"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/tool"
	"github.com/spf13/cobra"
)

// pebbleMain is `chaosnode pebble …`: Pebble's own command-line tool (the
// commands of cmd/pebble that inspect a store: db check, db lsm, manifest
// dump, sstable scan, …) built with the comparer storekeeper's stores use,
// Pebble's default. The harness runs `chaosnode pebble db check DIR` on
// every store once the nodes stopped.
//
// It behaves as upstream does, with one change: Pebble's informational
// log lines (WAL replay and the like) are dropped, so that anything on
// stderr is an error. Exit codes are upstream's too: 1 when Pebble reports
// on-disk corruption (its DataCorruption event is fatal), but 0 when
// CheckLevels returns an error (printed on stderr); so a caller reads
// stderr and the "checked N points" line, not only the exit code.
func pebbleMain(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{Use: "chaosnode pebble", Short: "Pebble's introspection tool", SilenceUsage: true}
	root.AddCommand(tool.New(tool.OpenOptions(quietLog{stderr})).Commands...)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		return 2
	}
	return 0
}

// quietLog is the opened store's logger: errors to w, fatal errors to w
// and exit 1 (as Pebble's default logger does), information nowhere.
type quietLog struct{ w io.Writer }

func (q quietLog) Apply(_ string, opts *pebble.Options) { opts.Logger = q }

func (quietLog) Infof(string, ...any) {}

func (q quietLog) Errorf(format string, a ...any) { fmt.Fprintf(q.w, format+"\n", a...) }

func (q quietLog) Fatalf(format string, a ...any) {
	fmt.Fprintf(q.w, format+"\n", a...)
	os.Exit(1)
}
