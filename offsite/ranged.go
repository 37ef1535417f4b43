package offsite

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"golang.org/x/sync/semaphore"
)

// Ranged reads. An object larger than one range is read as consecutive
// ranges, several at once: while the reader streams one range, the next
// ones download into buffers. A large sstable then arrives about as fast
// as several small ones, instead of holding a restore up at its tail.
//
// Buffers are bounded for the whole target (rangeBuffers ranges of
// rangeSize, 64 MiB by default): a read ahead that finds none free is not
// started, and the range is streamed when the reader reaches it. No read
// waits for a buffer, so none can wait forever.
const (
	rangeSize    = 8 << 20
	rangeAhead   = 3 // ranges read ahead of the one being read, per object
	rangeBuffers = 8 // read-ahead buffers per target
)

// rangeOpts are a ranged read's options. On S3, the SDK's own check of a
// response's checksum is left to when the API requires it: a server may
// answer a range with the whole object's checksum (gofakes3 does), which a
// range never matches. Every object's SHA-256 is checked over its whole
// content by whoever reads it, which covers what that check would.
var rangeOpts = &blob.ReaderOptions{BeforeRead: func(as func(any) bool) error {
	var opts *[]func(*s3.Options)
	if as(&opts) {
		*opts = append(*opts, func(o *s3.Options) {
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		})
	}
	return nil
}}

// rangedReader reads key as consecutive ranges of size bytes, read ahead.
type rangedReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	bucket *blob.Bucket
	key    string
	size   int64 // the object's size
	rsize  int64 // a range's
	ahead  int
	sem    *semaphore.Weighted

	cur     io.Reader     // the range being read
	curBody io.Closer     // its response body, when streamed
	curLeft int64         // bytes of it still to read
	next    int64         // the offset of the range after cur
	started []*rangeFetch // ranges read ahead, in order, from next on
}

// rangeFetch is one range read ahead into a buffer.
type rangeFetch struct {
	off, n int64
	done   chan struct{}
	b      []byte
	err    error
}

// openRanged opens key for reading in ranges. An object expected to be
// no larger than one range (about: hint is its content's size, before
// encryption) is read with one request; so is an empty one, which some
// servers refuse a range of.
func (t *Target) openRanged(ctx context.Context, key string, hint int64) (io.ReadCloser, error) {
	rsize, ahead := t.rangeSize, rangeAhead
	if rsize <= 0 {
		rsize = rangeSize
	}
	if hint <= rsize || t.rangeSem == nil {
		return t.bucket.NewReader(ctx, key, nil)
	}
	ctx, cancel := context.WithCancel(ctx)
	first, err := t.bucket.NewRangeReader(ctx, key, 0, rsize, rangeOpts)
	if err != nil {
		cancel()
		return nil, err
	}
	r := &rangedReader{
		ctx: ctx, cancel: cancel, bucket: t.bucket, key: key,
		size: first.Size(), rsize: rsize, ahead: ahead, sem: t.rangeSem,
		cur: first, curBody: first, curLeft: min(rsize, first.Size()), next: min(rsize, first.Size()),
	}
	r.readAhead()
	return r, nil
}

// readAhead starts the ranges after the current one that fit in the
// ahead window and find a free buffer.
func (r *rangedReader) readAhead() {
	off := r.next
	for _, f := range r.started {
		off = f.off + f.n
	}
	for len(r.started) < r.ahead && off < r.size {
		if !r.sem.TryAcquire(1) {
			return
		}
		f := &rangeFetch{off: off, n: min(r.rsize, r.size-off), done: make(chan struct{})}
		go r.fetch(f)
		r.started = append(r.started, f)
		off += f.n
	}
}

func (r *rangedReader) fetch(f *rangeFetch) {
	defer close(f.done)
	rd, err := r.bucket.NewRangeReader(r.ctx, r.key, f.off, f.n, rangeOpts)
	if err != nil {
		f.err = err
		return
	}
	defer rd.Close()
	f.b = make([]byte, f.n)
	if _, err := io.ReadFull(rd, f.b); err != nil {
		f.err = fmt.Errorf("range %d+%d: %w", f.off, f.n, err)
	}
}

func (r *rangedReader) Read(p []byte) (int, error) {
	for r.curLeft == 0 {
		if err := r.advance(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > r.curLeft {
		p = p[:r.curLeft]
	}
	n, err := r.cur.Read(p)
	r.curLeft -= int64(n)
	if err == io.EOF {
		if r.curLeft > 0 {
			// The object is shorter than its size said: a range ended
			// early. The caller's hash check names it; say so anyway.
			return n, fmt.Errorf("object %s: range ended %d bytes early: %w", r.key, r.curLeft, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}

// advance moves to the next range: the one read ahead when it was, else
// a request streamed now. io.EOF at the object's end.
func (r *rangedReader) advance() error {
	if r.curBody != nil {
		_ = r.curBody.Close()
		r.curBody = nil
	}
	if r.next >= r.size {
		return io.EOF
	}
	if len(r.started) > 0 {
		f := r.started[0]
		r.started = r.started[1:]
		select {
		case <-f.done:
		case <-r.ctx.Done():
			r.release(f)
			return r.ctx.Err()
		}
		r.sem.Release(1)
		if f.err != nil {
			return f.err
		}
		r.cur, r.curLeft, r.next = bytes.NewReader(f.b), f.n, f.off+f.n
	} else {
		n := min(r.rsize, r.size-r.next)
		rd, err := r.bucket.NewRangeReader(r.ctx, r.key, r.next, n, rangeOpts)
		if err != nil {
			return err
		}
		r.cur, r.curBody, r.curLeft, r.next = rd, rd, n, r.next+n
	}
	r.readAhead()
	return nil
}

// release gives f's buffer back once its request has ended.
func (r *rangedReader) release(f *rangeFetch) {
	go func() {
		<-f.done
		r.sem.Release(1)
	}()
}

// Close stops the reads ahead; their buffers return as each ends.
func (r *rangedReader) Close() error {
	r.cancel()
	for _, f := range r.started {
		r.release(f)
	}
	r.started = nil
	if r.curBody != nil {
		return r.curBody.Close()
	}
	return nil
}
