// Package redistest starts private Redis servers for tests.
//
// Start launches a fresh redis-server (looked up on PATH each time it is
// called) on a free 127.0.0.1 port with its own temporary directory, which
// holds its data, its config file (redis.conf) and its log (redis.log). By
// default it keeps no data on disk (save "", appendonly no); WithAOF turns
// the append-only file on. Start waits until the server answers PING and
// registers a cleanup that stops it (SIGTERM, then SIGKILL after a timeout)
// and removes its directory. The helper only ever talks to servers it
// started itself: it never uses an existing Redis such as one on port 6379.
//
//	func TestSomething(t *testing.T) {
//		srv := redistest.Start(t)
//		rdb := srv.Client(t)
//		...
//	}
//
// Kill (SIGKILL) and Restart (same port, same directory and config, so an
// AOF is reloaded) let tests simulate crashes; Stop shuts the server down
// gracefully.
//
// Pause (SIGSTOP) and Resume (SIGCONT) simulate a stalled Redis: while
// paused it answers nothing, but its kernel still accepts connections and
// buffers what clients send, so commands whose clients timed out and
// retried all run once it is resumed. Stop, Restart and the cleanup
// continue a paused server before stopping it (a stopped process would
// ignore the SIGTERM until the stop timeout); Kill kills it as it is, so
// what it buffered never runs. To stall single commands rather than the
// whole server, put a faultproxy in front of it.
//
// StartReplica starts a second redis-server replicating a started one
// and waits until it acknowledges the primary's writes, so that WAIT
// counts it; pausing it (Pause) makes a WAIT on the primary fall short,
// as a lagging or cut-off replica does.
//
// StartMain is the variant for TestMain and other code without a
// testing.TB: it returns a stop function instead of registering a cleanup,
// so one server can be shared by a package's tests, each of which can call
// FlushAll for a clean state.
//
// # Fallback and STOREKEEPER_REQUIRE_REDIS
//
// If redis-server is not on PATH, Start and StartMain fall back to an
// in-process miniredis (Real reports false) and print a notice to stderr
// once per process. A background ticker advances miniredis' clock by one
// second per second so that TTLs expire. miniredis cannot crash, reload
// data or stall: Kill, Restart, Pause and Resume return an error wrapping
// ErrNotReal. Nor can it replicate: StartReplica skips the test (or fails
// it, when a real server is required).
//
// The fallback is forbidden, and Start fails the test (StartMain returns an
// error) instead, when
//
//   - the environment variable STOREKEEPER_REQUIRE_REDIS is set to 1 (or
//     another true value accepted by strconv.ParseBool), as CI should do so
//     that no test silently runs against miniredis; or
//   - the caller passes RequireReal, as crash, load and performance tests
//     should.
package redistest
