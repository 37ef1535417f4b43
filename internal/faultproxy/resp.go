package faultproxy

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errProtocol means the client sent bytes that are not a RESP command.
var errProtocol = errors.New("faultproxy: protocol error")

// parseCommand parses the command at the start of buf: a RESP array of bulk
// strings, as go-redis sends, or an inline command such as "PING\r\n". It
// returns the command's arguments and its length in bytes; n is 0 if buf
// does not hold a whole command yet. A command without arguments (an empty
// inline line, "*0\r\n") has n > 0 and nil args: Redis ignores it without a
// reply, so the caller drops it.
func parseCommand(buf []byte) (args []string, n int, err error) {
	line, n := readLine(buf, 0)
	if n == 0 {
		return nil, 0, nil
	}
	if len(line) == 0 || line[0] != '*' {
		if args = strings.Fields(string(line)); len(args) == 0 {
			args = nil
		}
		return args, n, nil
	}
	count, err := strconv.Atoi(string(line[1:]))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: array header %q", errProtocol, line)
	}
	for range count {
		line, k := readLine(buf, n)
		if k == 0 {
			return nil, 0, nil
		}
		if len(line) == 0 || line[0] != '$' {
			return nil, 0, fmt.Errorf("%w: bulk header %q", errProtocol, line)
		}
		size, err := strconv.Atoi(string(line[1:]))
		if err != nil || size < 0 {
			return nil, 0, fmt.Errorf("%w: bulk header %q", errProtocol, line)
		}
		n += k
		if len(buf) < n+size+2 {
			return nil, 0, nil
		}
		args = append(args, string(buf[n:n+size]))
		n += size + 2
	}
	return args, n, nil
}

// readLine returns the line that starts at buf[off], without its "\r\n",
// and its length including the "\n"; n is 0 if the line is not complete.
func readLine(buf []byte, off int) (line []byte, n int) {
	i := bytes.IndexByte(buf[off:], '\n')
	if i < 0 {
		return nil, 0
	}
	return bytes.TrimSuffix(buf[off:off+i], []byte("\r")), i + 1
}

// replyCounter counts the complete replies in a RESP2 or RESP3 reply stream
// that it is fed in arbitrary chunks, without buffering bulk bodies. RESP3
// push messages ('>') and attributes ('|') are out of band, not replies.
type replyCounter struct {
	line      []byte // header line read so far
	skip      int    // bytes of a bulk body (with its "\r\n") still to skip
	open      []int  // values still missing from each open aggregate
	outOfBand bool   // the current top-level value is a push or an attribute
}

// feed consumes b and returns the number of replies it completed.
func (r *replyCounter) feed(b []byte) (replies int) {
	for len(b) > 0 {
		if r.skip > 0 {
			k := min(r.skip, len(b))
			r.skip -= k
			b = b[k:]
			if r.skip == 0 {
				replies += r.end()
			}
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			r.line = append(r.line, b...)
			break
		}
		r.line = append(r.line, b[:i]...)
		b = b[i+1:]
		replies += r.header(bytes.TrimSuffix(r.line, []byte("\r")))
		r.line = r.line[:0]
	}
	return replies
}

// header handles a value's first line.
func (r *replyCounter) header(line []byte) int {
	if len(line) == 0 {
		return 0
	}
	if len(r.open) == 0 {
		r.outOfBand = line[0] == '>' || line[0] == '|'
	}
	n, _ := strconv.Atoi(string(line[1:]))
	switch line[0] {
	case '$', '!', '=': // bulk string, bulk error, verbatim string
		if n >= 0 {
			r.skip = n + 2
			return 0
		}
	case '*', '~', '>': // array, set, push
		if n > 0 {
			r.open = append(r.open, n)
			return 0
		}
	case '%', '|': // map, attribute
		if n > 0 {
			r.open = append(r.open, 2*n)
			return 0
		}
	}
	return r.end() // simple string, error, integer, null, double, ...
}

// end records that a value is complete and returns 1 if that completed a
// reply.
func (r *replyCounter) end() int {
	for len(r.open) > 0 {
		r.open[len(r.open)-1]--
		if r.open[len(r.open)-1] > 0 {
			return 0
		}
		r.open = r.open[:len(r.open)-1]
	}
	if r.outOfBand {
		return 0
	}
	return 1
}
