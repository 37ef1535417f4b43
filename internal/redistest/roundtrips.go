package redistest

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTrips is a go-redis hook that counts the round trips a client makes
// (each command or pipeline is one; an autopipelined batch is a pipeline),
// the commands they carried, and those round trips with an argument
// starting with Prefix (e.g. "storekeeper:": the commands that touch
// storekeeper's own keys rather than asynq's), and the commands by name.
// Add it with AddHook. With OnlyMarked, it counts only what runs with a
// context from Mark: on a client other goroutines share (a worker's
// heartbeat loop, asynq's polling), the call under test alone. Scripts
// are also counted by their SHA (Script).
type RoundTrips struct {
	Prefix                    string
	OnlyMarked                bool
	total, commands, matching atomic.Int64
	named                     sync.Map // lower-case command name -> *atomic.Int64
	scripts                   sync.Map // script SHA -> *atomic.Int64
}

// Named returns how many commands called name (any case) were sent,
// pipelined or not.
func (c *RoundTrips) Named(name string) int64 {
	if n, ok := c.named.Load(strings.ToLower(name)); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

type markKey struct{}

// Script returns how many times the script whose SHA is sha was sent,
// by EVALSHA or (its text) by EVAL: a first EVALSHA refused with
// NOSCRIPT and the EVAL go-redis sends after it count twice.
func (c *RoundTrips) Script(sha string) int64 {
	if n, ok := c.scripts.Load(sha); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// Mark returns ctx marked for a RoundTrips with OnlyMarked.
func Mark(ctx context.Context) context.Context { return context.WithValue(ctx, markKey{}, true) }

// Total returns the round trips counted so far.
func (c *RoundTrips) Total() int64 { return c.total.Load() }

// Commands returns the commands those round trips carried.
func (c *RoundTrips) Commands() int64 { return c.commands.Load() }

// Matching returns those that carried an argument starting with Prefix.
func (c *RoundTrips) Matching() int64 { return c.matching.Load() }

func (c *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count(ctx, cmd)
		return next(ctx, cmd)
	}
}

func (c *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.count(ctx, cmds...)
		return next(ctx, cmds)
	}
}

func (c *RoundTrips) count(ctx context.Context, cmds ...redis.Cmder) {
	if c.OnlyMarked && ctx.Value(markKey{}) == nil {
		return
	}
	c.total.Add(1)
	c.commands.Add(int64(len(cmds)))
	for _, cmd := range cmds {
		name := strings.ToLower(cmd.Name())
		incr(&c.named, name)
		if args := cmd.Args(); len(args) > 1 && (name == "evalsha" || name == "eval") {
			sha, _ := args[1].(string)
			if name == "eval" { // the text: its SHA1, as Redis names scripts
				sum := sha1.Sum([]byte(sha))
				sha = hex.EncodeToString(sum[:])
			}
			incr(&c.scripts, sha)
		}
	}
	if c.Prefix == "" {
		return
	}
	for _, cmd := range cmds {
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && strings.HasPrefix(s, c.Prefix) {
				c.matching.Add(1)
				return
			}
		}
	}
}

// incr adds one to m's counter for key, made at its first use.
func incr(m *sync.Map, key string) {
	n, ok := m.Load(key)
	if !ok {
		n, _ = m.LoadOrStore(key, new(atomic.Int64))
	}
	n.(*atomic.Int64).Add(1)
}
