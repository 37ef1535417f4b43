package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestLoopbackIsBindableOutsideEphemeralAndNeverRepeated(t *testing.T) {
	lo := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		p, err := Loopback()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if lo-floor >= 1000 && (p < floor || p >= lo) {
			t.Fatalf("port %d outside [%d, %d)", p, floor, lo)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
}
