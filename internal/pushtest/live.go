package pushtest

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// LiveTimeout bounds WaitLive.
const LiveTimeout = 10 * time.Second

// WaitLive reads a /ws watcher's frames until the server's
// {"type":"stream.live"}, which says the watcher is subscribed: every event
// appended from then on reaches it. It returns the frames that came before
// (a since= replay, stream.gap), and fails tb if stream.live does not come
// within LiveTimeout or the connection ends first. It leaves c with no
// read deadline.
func WaitLive(tb testing.TB, c *websocket.Conn) []map[string]any {
	tb.Helper()
	_ = c.SetReadDeadline(time.Now().Add(LiveTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	var before []map[string]any
	for {
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			tb.Fatalf("waiting for stream.live after %d frames: %v", len(before), err)
		}
		// jobs.FrameLive, spelled here: jobs' own tests import this package.
		if m["type"] == "stream.live" {
			return before
		}
		before = append(before, m)
	}
}
