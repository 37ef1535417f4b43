package jobs

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"testing"
)

func TestParseHistoryCursor(t *testing.T) {
	for in, want := range map[string]string{"1": "1-0", "1-2": "1-2", "007-08": "7-8", "0-1": "0-1",
		"18446744073709551615-18446744073709551615": "18446744073709551615-18446744073709551615"} {
		if got, err := ParseHistoryCursor(in); err != nil || got != want {
			t.Errorf("ParseHistoryCursor(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

var cursorShape = regexp.MustCompile(`^([0-9]+)(?:-([0-9]+))?$`)

// FuzzHistoryCursor: a cursor is accepted exactly when it is digits, or
// digits-digits, each within 64 bits, not both zero; what is accepted
// comes back canonical ("<ms>-<seq>", no leading zeros), which parses to
// itself; what is refused is ErrBadCursor.
func FuzzHistoryCursor(f *testing.F) {
	for _, s := range []string{"0-0", "00-0", "1", "1-0", "1-", "-1", "18446744073709551615-18446744073709551615",
		"18446744073709551616-0", "1700000000000-12", "nope", "+1", " 1", "1-2-3", "0", "00000000000000000000001-0"} {
		f.Add(s)
	}
	max64 := new(big.Int).SetUint64(^uint64(0))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseHistoryCursor(s)
		want := false
		var ms, seq big.Int
		if m := cursorShape.FindStringSubmatch(s); m != nil {
			ms.SetString(m[1], 10)
			if m[2] != "" {
				seq.SetString(m[2], 10)
			}
			want = ms.Cmp(max64) <= 0 && seq.Cmp(max64) <= 0 && (ms.Sign() != 0 || seq.Sign() != 0)
		}
		if (err == nil) != want {
			t.Fatalf("ParseHistoryCursor(%q) = %q, %v; want ok=%v", s, got, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrBadCursor) || !errors.Is(err, ErrBadQuery) {
				t.Fatalf("ParseHistoryCursor(%q): %v is not ErrBadCursor", s, err)
			}
			return
		}
		if canon := fmt.Sprintf("%s-%s", ms.String(), seq.String()); got != canon {
			t.Fatalf("ParseHistoryCursor(%q) = %q, want %q", s, got, canon)
		}
		if again, err := ParseHistoryCursor(got); err != nil || again != got {
			t.Fatalf("ParseHistoryCursor(%q) = %q, %v; not canonical", got, again, err)
		}
	})
}
