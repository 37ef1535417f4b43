package keyspace

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
)

// BenchmarkLuaCosts prices the parts of a script inside Redis, from INFO
// commandstats' usec_per_call for EVALSHA (evalsha-us): an empty script,
// n redis.calls of a GET, n arguments of 36 bytes, n strings built in
// Lua. A diagnostic for docs/BENCHMARKS.md ("Trivial-job throughput"),
// not in `make bench`'s report:
//
//	go test -run '^$' -bench '^BenchmarkLuaCosts$' ./internal/keyspace
func BenchmarkLuaCosts(b *testing.B) {
	rdb := redistest.Start(b, redistest.RequireReal()).Client(b)
	if err := rdb.Set(b.Context(), "k", "v", 0).Err(); err != nil {
		b.Fatal(err)
	}
	run := func(name string, s *redis.Script, args []any) {
		b.Run(name, func(b *testing.B) {
			if err := rdb.ConfigResetStat(b.Context()).Err(); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := s.Run(b.Context(), rdb, []string{"k"}, args...).Err(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(redistest.CommandStats(b, rdb)["evalsha"].UsecPerCall, "evalsha-us")
		})
	}
	for _, n := range []int{0, 10, 40} {
		run(fmt.Sprintf("calls-%d", n), redis.NewScript(fmt.Sprintf(`for i = 1, %d do redis.call('GET', KEYS[1]) end return 1`, n)), nil)
	}
	for _, n := range []int{10, 40, 80} {
		args := make([]any, n)
		for i := range args {
			args[i] = fmt.Sprintf("value-%030d", i)
		}
		run(fmt.Sprintf("args-%d", n), redis.NewScript(`return 1`), args)
	}
	run("strings-40", redis.NewScript(`local t = {} for i = 1, 40 do t[i] = 'x' .. i end return 1`), nil)
}
