package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"storekeeper/client"
	"storekeeper/internal/config"
	"storekeeper/jobs"
)

const defaultServer = "http://127.0.0.1:8080"

// The variables that set --server and --token, named as the serve
// flags' are.
var (
	envServer = config.EnvName("server")
	envToken  = config.EnvName("token")
)

// liveWait bounds how long --wait waits for the server to confirm its
// watcher's subscription (client.WithLiveWait).
var liveWait = client.DefaultLiveWait

// command is one ctl subcommand; run defines its flags on fs, then parses
// args with ctl.parse. args and summary are for the usage texts.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error
}

var commands = []command{
	{"stores", "", "every store: owner node, state, size, backups, health", ctlStores},
	{"compact", "[STORE|--all]", "compact a store, or every store (--all); --force, --dry-run, --wait", enqueueCmd(jobs.KindCompact)},
	{"backup", "[STORE|--all]", "back up a store, or every store (--all); --reencrypt, --wait", enqueueCmd(jobs.KindBackup)},
	{"verify", "[STORE|--all]", "verify a store and its newest backup, or every store (--all); --deep, --wait", enqueueCmd(jobs.KindVerify)},
	{"restore", "STORE", "restore a store from its newest verified backup, or --backup ID, or from a backup target (--target NAME), or as it was at a moment (--at TIME: a backup plus the shipped commit log); --wait", ctlRestore},
	{"drill", "[STORE|--all]", "restore drill: restore a backup into a scratch directory (never the live store) and prove it; --target NAME, --backup ID, or --at TIME (a backup plus the shipped commit log); --wait", enqueueCmd(jobs.KindDrill)},
	{"adopt", "STORE", "disaster recovery: make a store whose machine is gone on another node (--node N) from a backup target (--target NAME); --backup ID, --force, --wait", ctlAdopt},
	{"pause", "STORE", "pause a store's scheduled and automatic jobs", storeSwitch(true)},
	{"resume", "STORE", "resume a paused store's scheduled and automatic jobs", storeSwitch(false)},
	{"jobs", "", "jobs in flight, or a batch's jobs (--batch); --store, --kind, --state", ctlJobs},
	{"job", "ID", "one job's record", ctlJob},
	{"cancel", "ID", "cancel a job (final)", ctlCancel},
	{"history", "", "finished jobs, newest first; --store, --kind, --limit, --before", ctlHistory},
	{"schedules", "", "each node's schedules and next runs; paused stores", ctlSchedules},
	{"nodes", "", "every node that has run: up or down, its stores, the stores it lost, since when it runs", ctlNodes},
	{"watch", "", "print events as they happen until interrupted; --store, --kind, --job, --since", ctlWatch},
}

// ctl is one ctl invocation: the global flags, where output goes, and the
// API client, made once the flags are parsed.
type ctl struct {
	cmd            command // being run
	server, token  string
	json           bool
	stdout, stderr io.Writer
	api            *client.Client
}

// errHelp: --help was asked for and printed; exit 0.
var errHelp = errors.New("help printed")

// usageError is a mistake on the command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// Run runs `storekeeper ctl [global flags] <command> [args] [flags]`
// (args start after "ctl"): client commands against a running server's
// HTTP API and WebSocket. Answers print as tables, or with --json as the
// API sent them (one object per line). It returns the exit status: 0
// done; 1 an API or network error, or a job --wait followed that failed
// or was canceled; 2 a usage error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &ctl{server: defaultServer, token: os.Getenv(envToken), stdout: stdout, stderr: stderr}
	if v := os.Getenv(envServer); v != "" {
		c.server = v
	}
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.globalFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			help(stdout, fs)
			return 0
		}
		fmt.Fprintf(stderr, "storekeeper ctl: %v\n\n", err)
		help(stderr, fs)
		return 2
	}
	if fs.NArg() == 0 {
		help(stderr, fs)
		return 2
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		if len(rest) == 0 {
			help(stdout, fs)
			return 0
		}
		name, rest = rest[0], []string{"--help"}
	}
	for _, cmd := range commands {
		if cmd.name == name {
			c.cmd = cmd
			return c.exit(cmd.run(ctx, c, c.flagSet(), rest))
		}
	}
	fmt.Fprintf(stderr, "storekeeper ctl: unknown command %q\n\n", name)
	help(stderr, fs)
	return 2
}

// exit prints err, if any, and returns the exit status.
func (c *ctl) exit(err error) int {
	cmd := c.cmd
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "storekeeper ctl %s: %s\nusage: storekeeper ctl %s [flags] (--help lists them)\n", cmd.name, ue.msg, strings.TrimSpace(cmd.name+" "+cmd.args))
		return 2
	default:
		fmt.Fprintln(c.stderr, "storekeeper:", err)
		return 1
	}
}

// secretFlag is a string flag whose value --help never shows.
type secretFlag struct{ p *string }

func (s secretFlag) String() string { return "" }

func (s secretFlag) Set(v string) error { *s.p = v; return nil }

// globalFlags defines --server, --token and --json, accepted before the
// command and after it; the defaults are what c holds already.
func (c *ctl) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", c.server, "the server's base `URL` (env "+envServer+")")
	fs.Var(secretFlag{&c.token}, "token", "the API `token` (env "+envToken+")")
	fs.BoolVar(&c.json, "json", c.json, "print the API's JSON answers as they are, one object per line")
}

// flagSet returns the command's flag set with the global flags. It prints
// nothing itself: parse does.
func (c *ctl) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("ctl "+c.cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.globalFlags(fs)
	return fs
}

// parse parses a command's flags, which may come before, between or after
// its arguments, checks that it has min to max arguments, and makes the
// API client. --help prints the command's usage and returns errHelp.
func (c *ctl) parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		cmdHelp(c.stdout, c.cmd, fs)
		return nil, errHelp
	}
	if err != nil {
		return nil, usageError{err.Error()}
	}
	switch {
	case len(pos) < min:
		return nil, usagef("missing %s", c.cmd.args)
	case len(pos) > max:
		return nil, usagef("unexpected argument %q", pos[max])
	}
	c.api, err = client.New(c.server, client.WithToken(c.token), client.WithLiveWait(liveWait))
	if err != nil {
		return nil, usageError{"--" + err.Error()} // --server "…": want …
	}
	return pos, nil
}

// parseInterspersed parses flags anywhere among the arguments, which it
// returns; everything after "--" is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

func help(w io.Writer, global *flag.FlagSet) {
	fmt.Fprint(w, "usage: storekeeper ctl [global flags] <command> [args] [flags]\n\ncommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-30s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	}
	fmt.Fprint(w, "\nglobal flags (also accepted after the command):\n")
	printFlags(w, global)
	fmt.Fprint(w, "\nstorekeeper ctl <command> --help lists a command's flags.\n"+
		"Exit status: 0 done; 1 an error from the API or the network, or a job that --wait\n"+
		"followed failed or was canceled; 2 a usage error.\n")
}

func cmdHelp(w io.Writer, cmd command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: storekeeper ctl %s [flags]\n\n%s\n\nflags:\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	printFlags(w, fs)
}

func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// answer returns ctx, under which with --json the API's answers are
// printed as they came (client.WithAnswer). A command that printed them
// has nothing more to show.
func (c *ctl) answer(ctx context.Context) context.Context {
	if !c.json {
		return ctx
	}
	return client.WithAnswer(ctx, c.printRaw)
}

// printRaw prints one JSON answer or frame on one line.
func (c *ctl) printRaw(raw json.RawMessage) {
	fmt.Fprintf(c.stdout, "%s\n", bytes.TrimSpace(raw))
}
