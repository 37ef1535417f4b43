// Package ctl is storekeeper ctl, the command-line client of a running
// server: it parses the ctl commands and their flags, calls the server
// through package client, and prints the answers as tables, or with
// --json as the API sent them (one object per line).
//
// The commands that make jobs (compact, backup, verify, restore) follow
// them with --wait: the watcher is subscribed before the job is asked for,
// and the jobs' events show as a status line rewritten in place on a
// terminal, one line per event otherwise. watch prints events as they
// happen, in words (prose.go) or as JSON.
//
// The files: ctl.go the command table, flags, help and exit status;
// commands.go the commands that ask and print; enqueue.go the commands
// that make jobs and --wait; progress.go the --wait display; watch.go
// watch; prose.go events in words; results.go job results in words;
// table.go the table and value formatting.
package ctl
