package api

import (
	"context"
	"time"

	"storekeeper/jobsdb"
)

// nodeCheckEvery is how often an API process looks for nodes whose
// heartbeat expired.
const nodeCheckEvery = 5 * time.Second

// watchNodes emits node.down for nodes whose heartbeat expired, every
// nodeCheckEvery until ctx ends: whichever API or worker process sees it
// first does, once (jobsdb.CheckNodes). It runs under the events hub, which
// starts and stops it.
func (s *Server) watchNodes(ctx context.Context) {
	t := time.NewTicker(nodeCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if down, err := jobsdb.CheckNodes(ctx, s.rdb, s.cfg.Jobs.EventsMaxLen); err == nil && len(down) > 0 {
			s.log.Warn("nodes down: their heartbeats expired", "nodes", down)
		}
	}
}
