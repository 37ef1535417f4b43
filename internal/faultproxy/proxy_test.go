package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
)

// incrScript stands for storekeeper's Lua scripts: one INCR per run, so
// the counter says how many times the script ran.
var incrScript = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// setup starts a real redis-server and a proxy in front of it, and returns
// the proxy and a client that talks to the server directly.
func setup(t *testing.T) (*Proxy, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t, redistest.RequireReal())
	return Start(t, srv.Addr()), srv.Client(t)
}

// client returns a go-redis client that connects through px.
func client(t *testing.T, px *Proxy, opt redis.Options) *redis.Client {
	t.Helper()
	opt.Addr = px.Addr()
	c := redis.NewClient(&opt)
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// getInt returns the integer at key, 0 if there is none.
func getInt(t *testing.T, direct *redis.Client, key string) int {
	t.Helper()
	n, err := direct.Get(context.Background(), key).Int()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return n
}

// waitUntil polls cond until it holds, failing the test after 10s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testsignal.WaitForWithin(t, 10*time.Second, what, cond)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isEvalSha matches the EVALSHA of incrScript carrying the argument op.
func isEvalSha(op string) func(args []string) bool {
	return func(args []string) bool {
		return strings.EqualFold(args[0], "evalsha") && args[1] == incrScript.Hash() && slices.Contains(args, op)
	}
}

// holdRetriedScript runs incrScript through px with a 100ms read timeout
// and default retries while its EVALSHA is held, and returns the hold once
// the original and its 3 retries are all held.
func holdRetriedScript(t *testing.T, px *Proxy) *Hold {
	t.Helper()
	ctx := testCtx(t)
	rdb := client(t, px, redis.Options{ReadTimeout: 100 * time.Millisecond})
	// Loaded first, as in production after the first run: Run falls back
	// to EVAL only on NOSCRIPT, not on a timeout, so EVALSHAs of a script
	// Redis does not know would all just fail with NOSCRIPT once released.
	if err := incrScript.Load(ctx, rdb).Err(); err != nil {
		t.Fatalf("script load: %v", err)
	}
	h := px.Hold(isEvalSha("op-1"))
	err := incrScript.Run(ctx, rdb, []string{"counter"}, "op-1").Err()
	if !isTimeout(err) {
		t.Fatalf("run with its EVALSHA held: err = %v, want a timeout", err)
	}
	if err := h.Wait(ctx, 4); err != nil {
		t.Fatalf("original and 3 retries: %v", err)
	}
	return h
}

func TestHoldRetriedScriptRunsEveryAttemptOnRelease(t *testing.T) {
	px, direct := setup(t)
	h := holdRetriedScript(t, px)
	if n := getInt(t, direct, "counter"); n != 0 {
		t.Fatalf("counter = %d while every attempt is held, want 0", n)
	}
	if n := h.Forwarded(); n != 0 {
		t.Fatalf("Forwarded() = %d before Release, want 0", n)
	}

	if err := h.Release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	held := h.Held()
	t.Logf("%d EVALSHAs held, all ran on release", held)
	if held < 2 {
		t.Fatalf("Held() = %d, want at least 2 (the original and a retry)", held)
	}
	if n := getInt(t, direct, "counter"); n != held {
		t.Fatalf("counter = %d after Release, want %d (one INCR per held EVALSHA)", n, held)
	}
	if n := h.Forwarded(); n != held {
		t.Fatalf("Forwarded() = %d, want %d", n, held)
	}

	// Released: later matches pass, and count.
	rdb := client(t, px, redis.Options{})
	n, err := incrScript.Run(testCtx(t), rdb, []string{"counter"}, "op-1").Int()
	if err != nil || n != held+1 {
		t.Fatalf("run after release = %d, %v; want %d", n, err, held+1)
	}
	if got := h.Forwarded(); got != held+1 {
		t.Fatalf("Forwarded() = %d after one more run, want %d", got, held+1)
	}
	if got := h.Held(); got != held {
		t.Fatalf("Held() = %d after Release, want still %d", got, held)
	}
}

func TestReleaseOneRunsOnlyTheEarliest(t *testing.T) {
	px, direct := setup(t)
	h := holdRetriedScript(t, px)
	held := h.Held()

	for i := 1; i <= 2; i++ {
		if err := h.ReleaseOne(); err != nil {
			t.Fatalf("release one #%d: %v", i, err)
		}
		if n := getInt(t, direct, "counter"); n != i {
			t.Fatalf("counter = %d after %d ReleaseOne, want %d", n, i, i)
		}
		if n := h.Forwarded(); n != i {
			t.Fatalf("Forwarded() = %d after %d ReleaseOne, want %d", n, i, i)
		}
	}
	if err := h.Release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	if n := getInt(t, direct, "counter"); n != held {
		t.Fatalf("counter = %d after Release, want %d", n, held)
	}
	if err := h.ReleaseOne(); err == nil {
		t.Fatal("ReleaseOne with nothing held: no error")
	}
}

func TestHoldSplitsPipeline(t *testing.T) {
	px, direct := setup(t)
	rdb := client(t, px, redis.Options{})
	ctx := testCtx(t)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	h := px.Hold(func(args []string) bool { return strings.EqualFold(args[0], "incr") && args[1] == "k2" })

	// One write carries the three commands: the first goes, the second is
	// held and the third waits behind it.
	type result struct {
		vals []int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		var cmds [3]*redis.IntCmd
		_, r.err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range cmds {
				cmds[i] = p.Incr(ctx, "k"+strconv.Itoa(i+1))
			}
			return nil
		})
		for _, c := range cmds {
			r.vals = append(r.vals, c.Val())
		}
		done <- r
	}()
	if err := h.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "k1 is incremented", func() bool { return getInt(t, direct, "k1") == 1 })
	if k2, k3 := getInt(t, direct, "k2"), getInt(t, direct, "k3"); k2 != 0 || k3 != 0 {
		t.Fatalf("k2, k3 = %d, %d while k2's INCR is held, want 0, 0", k2, k3)
	}

	if err := h.Release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	r := <-done
	if r.err != nil || !slices.Equal(r.vals, []int64{1, 1, 1}) {
		t.Fatalf("pipeline = %v, %v; want [1 1 1]", r.vals, r.err)
	}
	if n := h.Forwarded(); n != 1 {
		t.Fatalf("Forwarded() = %d, want 1", n)
	}
}

// rawConn dials px for hand-written commands.
func rawConn(t *testing.T, px *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", px.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func expectLines(t *testing.T, r *bufio.Reader, want ...string) {
	t.Helper()
	for _, w := range want {
		line, err := r.ReadString('\n')
		if err != nil || line != w+"\r\n" {
			t.Fatalf("read %q, %v; want %q", line, err, w)
		}
	}
}

func TestInlineCommandsAcrossWrites(t *testing.T) {
	px, _ := setup(t)
	h := px.Hold(func(args []string) bool { return args[0] == "ECHO" && args[1] == "a" })
	c, r := rawConn(t, px)
	for _, part := range []string{"PI", "NG\r\nECHO a\r\nEC", "HO b\r\n"} {
		if _, err := io.WriteString(c, part); err != nil {
			t.Fatal(err)
		}
	}
	expectLines(t, r, "+PONG")
	if err := h.Wait(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if err := h.ReleaseOne(); err != nil { // ECHO a, and ECHO b behind it
		t.Fatalf("release one: %v", err)
	}
	expectLines(t, r, "$1", "a", "$1", "b")
}

func TestPauseHoldsEverythingUntilResume(t *testing.T) {
	px, direct := setup(t)
	ctx := testCtx(t)
	rdb := client(t, px, redis.Options{ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	if err := rdb.Ping(ctx).Err(); err != nil { // connect before the pause
		t.Fatal(err)
	}

	px.Pause()
	if err := rdb.Incr(ctx, "p").Err(); !isTimeout(err) {
		t.Fatalf("incr while paused: err = %v, want a timeout", err)
	}
	// A new connection is accepted but its handshake is held too.
	fresh := client(t, px, redis.Options{ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	if err := fresh.Ping(ctx).Err(); !isTimeout(err) {
		t.Fatalf("ping on a new connection while paused: err = %v, want a timeout", err)
	}
	if n := getInt(t, direct, "p"); n != 0 {
		t.Fatalf("p = %d while paused, want 0", n)
	}

	px.Resume()
	// The INCR whose client timed out and closed its connection runs now.
	waitUntil(t, "the held INCR runs", func() bool { return getInt(t, direct, "p") == 1 })
	if n, err := rdb.Incr(ctx, "p").Result(); err != nil || n != 2 {
		t.Fatalf("incr after resume = %d, %v; want 2", n, err)
	}
}

func TestResumeForwardsInArrivalOrder(t *testing.T) {
	px, direct := setup(t)
	px.Pause()
	var readers []*bufio.Reader
	for i, s := range []string{"c", "a", "b"} {
		c, r := rawConn(t, px)
		readers = append(readers, r)
		if _, err := io.WriteString(c, "APPEND order "+s+"\r\n"); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the APPEND arrives", func() bool {
			px.mu.Lock()
			defer px.mu.Unlock()
			return px.seq == uint64(i+1)
		})
	}
	px.Resume()
	for _, r := range readers {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := direct.Get(context.Background(), "order").Result(); err != nil || got != "cab" {
		t.Fatalf("order = %q, %v; want \"cab\"", got, err)
	}
}

func TestDropConnections(t *testing.T) {
	for _, tc := range []struct {
		name string
		drop func(*Proxy)
	}{
		{"Drop", (*Proxy).DropConnections},
		{"Reset", (*Proxy).ResetConnections},
	} {
		t.Run(tc.name, func(t *testing.T) {
			px, direct := setup(t)
			ctx := testCtx(t)
			rdb := client(t, px, redis.Options{MaxRetries: -1})
			h := px.Hold(func(args []string) bool { return strings.EqualFold(args[0], "incr") })
			errc := make(chan error, 1)
			go func() { errc <- rdb.Incr(ctx, "d").Err() }()
			if err := h.Wait(ctx, 1); err != nil {
				t.Fatal(err)
			}

			tc.drop(px)
			// With RESP3, go-redis reports a reset as io.EOF too.
			if err := <-errc; err == nil || isTimeout(err) {
				t.Fatalf("incr on a dropped connection: err = %v, want a connection error", err)
			}
			if err := h.Release(); err != nil { // nothing left: the INCR was lost
				t.Fatalf("release: %v", err)
			}
			if n := h.Forwarded(); n != 0 {
				t.Fatalf("Forwarded() = %d, want 0", n)
			}
			if n, err := rdb.Incr(ctx, "d").Result(); err != nil || n != 1 {
				t.Fatalf("incr after reconnecting = %d, %v; want 1", n, err)
			}
			if n := getInt(t, direct, "d"); n != 1 {
				t.Fatalf("d = %d, want 1", n)
			}
		})
	}
}

func TestResetSendsRST(t *testing.T) {
	px, _ := setup(t)
	c, r := rawConn(t, px)
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		t.Fatal(err)
	}
	expectLines(t, r, "+PONG")
	px.ResetConnections()
	if _, err := r.ReadByte(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after ResetConnections: %v, want ECONNRESET", err)
	}
}

func TestDelay(t *testing.T) {
	px, _ := setup(t)
	rdb := client(t, px, redis.Options{})
	ctx := testCtx(t)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	px.Delay(50 * time.Millisecond)
	start := time.Now()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("ping took %v with 50ms each way, want at least 100ms", d)
	}
	px.Delay(0)
}

func TestCloseWithHeldCommands(t *testing.T) {
	srv := redistest.Start(t, redistest.RequireReal())
	px, err := New(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rdb := client(t, px, redis.Options{MaxRetries: -1})
	ctx := testCtx(t)
	h := px.Hold(func(args []string) bool { return strings.EqualFold(args[0], "incr") })
	errc := make(chan error, 1)
	go func() { errc <- rdb.Incr(ctx, "c").Err() }()
	if err := h.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	px.Pause()

	px.Close() // returns only once every goroutine has ended
	px.Close()
	if err := <-errc; err == nil {
		t.Fatal("incr held when the proxy closed: no error")
	}
	if err := h.Release(); err != nil {
		t.Fatalf("release after close: %v", err)
	}
	if _, err := net.Dial("tcp", px.Addr()); err == nil {
		t.Fatal("proxy still accepts connections after Close")
	}
	if err := h.Wait(ctx, 2); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close = %v, want ErrClosed", err)
	}
}

// A connection whose client goes is closed upstream at once when nothing
// was held for it, even if the proxy cannot count its replies (a RESP3
// SUBSCRIBE is answered with a push message).
func TestClientCloseClosesUpstream(t *testing.T) {
	px, _ := setup(t)
	rdb := client(t, px, redis.Options{})
	ctx := testCtx(t)
	sub := rdb.Subscribe(ctx, "ch")
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sub.Close()
	rdb.Close()
	waitUntil(t, "every connection is closed", func() bool {
		px.mu.Lock()
		defer px.mu.Unlock()
		return len(px.conns) == 0
	})
	if d := time.Since(start); d > answerTimeout/2 {
		t.Fatalf("connections closed only after %v", d)
	}
}
