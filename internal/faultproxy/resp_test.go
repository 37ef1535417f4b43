package faultproxy

import (
	"errors"
	"slices"
	"testing"
)

func TestParseCommandPipelinedAndPartial(t *testing.T) {
	stream := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n" + // a bulk with CRLF inside
		"PING\r\n" +
		"\r\n" + // empty inline line: no command
		"*0\r\n" +
		"*2\r\n$3\r\nGET\r\n$0\r\n\r\n" +
		"ECHO  hi\r\n"
	want := [][]string{{"SET", "k", "a\r\nb"}, {"PING"}, {"GET", ""}, {"ECHO", "hi"}}

	// Whole, and cut at every byte: a command is only returned once all of
	// it is there, and always with the same arguments.
	for cut := 0; cut <= len(stream); cut++ {
		var got [][]string
		buf := []byte(stream[:cut])
		rest := stream[cut:]
		for {
			args, n, err := parseCommand(buf)
			if err != nil {
				t.Fatalf("cut %d: %v", cut, err)
			}
			if n == 0 {
				if rest == "" {
					break
				}
				buf, rest = append(buf, rest...), ""
				continue
			}
			if args != nil {
				got = append(got, args)
			}
			buf = buf[n:]
		}
		if len(buf) != 0 {
			t.Fatalf("cut %d: %q left over", cut, buf)
		}
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("cut %d: got %q, want %q", cut, got, want)
		}
	}
}

func TestParseCommandRejectsGarbage(t *testing.T) {
	for _, in := range []string{"*x\r\n", "*1\r\n+OK\r\n", "*1\r\n$-1\r\n"} {
		if _, _, err := parseCommand([]byte(in)); !errors.Is(err, errProtocol) {
			t.Errorf("parseCommand(%q) error = %v, want errProtocol", in, err)
		}
	}
}

func TestReplyCounter(t *testing.T) {
	replies := []string{
		"+OK\r\n",
		"-ERR no\r\n",
		":42\r\n",
		"$5\r\nhe\r\nl\r\n", // a bulk with CRLF inside
		"$-1\r\n",
		"*-1\r\n",
		"*0\r\n",
		"*2\r\n$1\r\na\r\n*2\r\n:1\r\n_\r\n",
		"%2\r\n+a\r\n:1\r\n+b\r\n~1\r\n,1.5\r\n",
		"=9\r\ntxt:hello\r\n",
		"!3\r\nERR\r\n",
		"#t\r\n",
		"(123\r\n",
	}
	outOfBand := "|1\r\n+key\r\n+val\r\n" + ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"
	stream := replies[0] + outOfBand
	for _, r := range replies[1:] {
		stream += r
	}

	for size := 1; size <= len(stream); size++ {
		var rc replyCounter
		got := 0
		for s := stream; s != ""; {
			k := min(size, len(s))
			got += rc.feed([]byte(s[:k]))
			s = s[k:]
		}
		if got != len(replies) {
			t.Fatalf("fed in %d-byte chunks: counted %d replies, want %d", size, got, len(replies))
		}
	}
}
