// Package faultproxy is a TCP proxy in front of a Redis that injects faults
// for tests: it can stall chosen commands, stall everything, add latency and
// drop connections.
//
// Its main use is to reproduce what a stalled Redis does to storekeeper's
// exactly-once guarantees. go-redis retries a command whose read timed out
// (MaxRetries 0 means 3 retries, EVAL and EVALSHA included), each retry on
// another connection, and closes the connection that timed out; a Redis
// that was only stalled later runs the original and every retry, since
// they all sat in its socket buffers. A test holds the one command it cares
// about (say the EVALSHA of one Lua script, recognised by an argument such
// as an operation id), lets the client time out and retry, then releases
// everything, or one command at a time, and counts how often the command
// reached Redis:
//
//	srv := redistest.Start(t, redistest.RequireReal())
//	px := faultproxy.Start(t, srv.Addr())
//	rdb := redis.NewClient(&redis.Options{Addr: px.Addr(), ReadTimeout: 100 * time.Millisecond})
//	h := px.Hold(func(args []string) bool {
//		return strings.EqualFold(args[0], "evalsha") && slices.Contains(args, opID)
//	})
//	err := script.Run(ctx, rdb, keys, opID).Err() // times out, after 3 retries
//	h.Wait(ctx, 4)                                // the original and 3 retries
//	h.Release()                                   // all 4 run, in order
//	// h.Forwarded() == 4
//
// Every client connection gets its own upstream connection. The proxy parses
// what clients send into commands (RESP arrays of bulk strings, as go-redis
// sends them, and inline commands such as "PING\r\n"), however they are
// split across or packed into reads. Replies pass through as they come; the
// proxy only counts them, so that it knows when a released command has been
// answered. (It counts one reply per command, which does not hold on a
// connection in RESP2 Pub/Sub mode; do not hold commands there.)
//
// # Holding commands
//
// Hold holds every command its match accepts, and everything the same
// client sends after it on that connection, so that the order per
// connection is kept; other connections keep flowing. Held commands belong
// to the proxy: if the client closes its connection meanwhile, as go-redis
// does after a read timeout, they are still written to that connection's
// upstream on release, and the replies are read and thrown away. The
// upstream connection is closed once all that was answered (or after 10s).
//
// Wait blocks until a number of matches have been held; Held and Forwarded
// count them. ReleaseOne forwards the earliest held match and waits until
// Redis has answered it; Release stops holding and forwards all that is
// held, one at a time in arrival order, each after the previous was
// answered, so that they run in a known order.
//
// # Other faults
//
// Pause holds all traffic to Redis on every connection, and on connections
// accepted while paused, like a SIGSTOPped Redis (redistest's Server.Pause
// is the real thing); Resume forwards it in arrival order. Delay adds
// latency to every chunk forwarded in either direction. DropConnections
// closes all current connections, ResetConnections does it with a TCP
// reset; what they held is lost.
//
// Close ends everything. Start is New for tests: it closes the proxy when
// the test ends. The package is safe for concurrent use and does not need a
// test: a chaos harness can run a Proxy too.
package faultproxy
