package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// seglog is an append-only log of segment files with the whole index in
// memory. A record is length(4, LE) crc32c(4, LE, of the payload) payload
// (appendBinary). A commit is one pwrite of all its records and one
// fdatasync. Open rebuilds the index by reading every segment once.
type seglog struct {
	dir  string
	opts seglogOptions

	segs   []*os.File // by segment number; the last one is appended to
	curOff int64      // end of the last segment

	mu      sync.RWMutex // guards the index below against readers
	origins map[string]*originLog
	names   []string // origin by index (roomEntry.oseq's top 16 bits)
	index   map[string]uint16
	rooms   map[string][]roomEntry // each sorted by (created, origin, seq)
	heads   heads
	refs    refIndex

	buf  []byte
	rbuf []byte
}

type seglogOptions struct {
	// SegmentSize is where a segment ends and the next begins. Default
	// 64 MiB; at most 1<<posOffBits.
	SegmentSize int64
}

// A position packs segment number, offset and payload length in 64 bits:
// 20 bits of segment (64 TiB at 64 MiB each), 26 of offset, 18 of length
// (a message is at most ~5 KB: 4,096 bytes of text and its names).
const (
	posLenBits = 18
	posOffBits = 26
)

func packPos(seg int, off int64, n int) uint64 {
	return uint64(seg)<<(posOffBits+posLenBits) | uint64(off)<<posLenBits | uint64(n)
}

func unpackPos(p uint64) (seg int, off int64, n int) {
	return int(p >> (posOffBits + posLenBits)), int64(p>>posLenBits) & (1<<posOffBits - 1), int(p & (1<<posLenBits - 1))
}

// originLog is where each message of one origin is: seqs are contiguous,
// so pos[seq-first] is the record of seq. 8 bytes a message.
type originLog struct {
	first uint64
	pos   []uint64
}

// roomEntry is one message in a room's order: 16 bytes.
type roomEntry struct {
	created int64
	oseq    uint64 // origin index << 48 | seq
}

const recHeader = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func segName(dir string, n int) string { return filepath.Join(dir, fmt.Sprintf("%08d.seg", n)) }

func openSeglog(dir string, opts seglogOptions) (*seglog, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 64 << 20
	}
	opts.SegmentSize = min(opts.SegmentSize, 1<<posOffBits)
	e := &seglog{dir: dir, opts: opts, origins: map[string]*originLog{}, index: map[string]uint16{},
		rooms: map[string][]roomEntry{}, heads: heads{}, refs: refIndex{}}
	for n := 0; ; n++ {
		f, err := os.OpenFile(segName(dir, n), os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			e.Close()
			return nil, err
		}
		e.segs = append(e.segs, f)
	}
	for n, f := range e.segs {
		end, err := e.scan(n, f)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("scan %s: %w", f.Name(), err)
		}
		if n == len(e.segs)-1 {
			// A torn last commit is cut off: it was never acked.
			if err := f.Truncate(end); err != nil {
				e.Close()
				return nil, err
			}
			e.curOff = end
		}
	}
	if len(e.segs) == 0 {
		if err := e.newSegment(); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// scan indexes the records of segment n, returning the end of the last
// whole one.
func (e *seglog) scan(n int, f *os.File) (int64, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	var off int64
	for int64(len(data))-off >= recHeader {
		l := int64(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if l == 0 || off+recHeader+l > int64(len(data)) {
			break
		}
		payload := data[off+recHeader : off+recHeader+l]
		if crc32.Checksum(payload, castagnoli) != sum {
			break
		}
		var m Message
		if err := decodeBinary(payload, &m); err != nil {
			return 0, err
		}
		if err := e.indexMessage(&m, packPos(n, off, int(l))); err != nil {
			return 0, err
		}
		off += recHeader + l
	}
	return off, nil
}

func (e *seglog) newSegment() error {
	n := len(e.segs)
	if n >= 1<<(64-posOffBits-posLenBits) {
		return errors.New("seglog: out of segment numbers")
	}
	f, err := os.OpenFile(segName(e.dir, n), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// The new name must be durable before anything in it is acked.
	d, err := os.Open(e.dir)
	if err != nil {
		f.Close()
		return err
	}
	err = d.Sync()
	d.Close()
	if err != nil {
		f.Close()
		return err
	}
	e.segs = append(e.segs, f)
	e.curOff = 0
	return nil
}

func (e *seglog) originIndex(o string) (uint16, error) {
	i, ok := e.index[o]
	if !ok {
		if len(e.names) == math.MaxUint16 {
			return 0, errors.New("seglog: too many origins")
		}
		i = uint16(len(e.names))
		e.names = append(e.names, o)
		e.index[o] = i
	}
	return i, nil
}

// indexMessage adds m, stored at pos, to the in-memory index (under mu, or
// during Open).
func (e *seglog) indexMessage(m *Message, pos uint64) error {
	ol := e.origins[m.Origin]
	if ol == nil {
		ol = &originLog{first: m.Seq}
		e.origins[m.Origin] = ol
	}
	if m.Seq != ol.first+uint64(len(ol.pos)) {
		return fmt.Errorf("seglog: origin %s seq %d after %d", m.Origin, m.Seq, ol.first+uint64(len(ol.pos))-1)
	}
	ol.pos = append(ol.pos, pos)
	oi, err := e.originIndex(m.Origin)
	if err != nil {
		return err
	}
	ent := roomEntry{m.Created, uint64(oi)<<48 | m.Seq}
	rs := e.rooms[m.Room]
	i := len(rs)
	for i > 0 && e.less(ent, rs[i-1]) {
		i-- // replicated messages may be older than the room's newest
	}
	rs = append(rs, roomEntry{})
	copy(rs[i+1:], rs[i:])
	rs[i] = ent
	e.rooms[m.Room] = rs
	e.heads.add(m)
	e.refs.add(m)
	return nil
}

func (e *seglog) less(a, b roomEntry) bool {
	if a.created != b.created {
		return a.created < b.created
	}
	ao, bo := e.names[a.oseq>>48], e.names[b.oseq>>48]
	if ao != bo {
		return ao < bo
	}
	return a.oseq&(1<<48-1) < b.oseq&(1<<48-1)
}

func (e *seglog) Commit(batch []Message) error {
	e.buf = e.buf[:0]
	for i := range batch {
		start := len(e.buf)
		e.buf = append(e.buf, 0, 0, 0, 0, 0, 0, 0, 0) // header, filled below
		e.buf = appendBinary(e.buf, &batch[i])
		payload := e.buf[start+recHeader:]
		if len(payload) >= 1<<posLenBits {
			return fmt.Errorf("seglog: message %s/%d of %d bytes is too large", batch[i].Origin, batch[i].Seq, len(payload))
		}
		binary.LittleEndian.PutUint32(e.buf[start:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(e.buf[start+4:], crc32.Checksum(payload, castagnoli))
	}
	if e.curOff > 0 && e.curOff+int64(len(e.buf)) > e.opts.SegmentSize {
		if err := e.newSegment(); err != nil {
			return err
		}
	}
	f := e.segs[len(e.segs)-1]
	if _, err := f.WriteAt(e.buf, e.curOff); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	seg := len(e.segs) - 1
	e.mu.Lock()
	defer e.mu.Unlock()
	off := e.curOff
	for i := range batch {
		l := int64(binary.LittleEndian.Uint32(e.buf[off-e.curOff:]))
		if err := e.indexMessage(&batch[i], packPos(seg, off, int(l))); err != nil {
			return err
		}
		off += recHeader + l
	}
	e.curOff = off
	return nil
}

// readAll preads the records at pos (any order) into out[i], merging
// records closer than readGap in one segment into one pread.
func (e *seglog) readAll(pos []uint64) ([]Message, error) {
	const readGap = 1024
	order := make([]int, len(pos))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return pos[order[a]] < pos[order[b]] })
	out := make([]Message, len(pos))
	for i := 0; i < len(order); {
		seg, start, _ := unpackPos(pos[order[i]])
		j, end := i, start
		for j < len(order) {
			s, off, n := unpackPos(pos[order[j]])
			if s != seg || off > end+readGap {
				break
			}
			end = off + recHeader + int64(n)
			j++
		}
		if cap(e.rbuf) < int(end-start) {
			e.rbuf = make([]byte, end-start)
		}
		b := e.rbuf[:end-start]
		if _, err := e.segs[seg].ReadAt(b, start); err != nil {
			return nil, err
		}
		for ; i < j; i++ {
			_, off, n := unpackPos(pos[order[i]])
			r := b[off-start:]
			payload := r[recHeader : recHeader+n]
			if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(r[4:]) {
				return nil, fmt.Errorf("seglog: bad checksum at segment %d offset %d", seg, off)
			}
			if err := decodeBinary(payload, &out[order[i]]); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func (e *seglog) posOf(oseq uint64) uint64 {
	ol := e.origins[e.names[oseq>>48]]
	return ol.pos[oseq&(1<<48-1)-ol.first]
}

func (e *seglog) Latest(room string, n int) ([]Message, error) {
	e.mu.RLock()
	rs := e.rooms[room]
	rs = rs[max(0, len(rs)-n):]
	pos := make([]uint64, len(rs))
	for i, r := range rs {
		pos[i] = e.posOf(r.oseq)
	}
	e.mu.RUnlock()
	ms, err := e.readAll(pos)
	if err != nil {
		return nil, err
	}
	out := ms[:0]
	for _, m := range ms {
		if !m.Hidden { // few: a hidden copy makes a page one shorter here
			out = append(out, m)
		}
	}
	return out, nil
}

func (e *seglog) Since(room string, cursor map[string]uint64, limit int) ([]Message, error) {
	e.mu.RLock()
	rs := e.rooms[room]
	// Each origin's messages are created in seq order, so once the walk
	// back meets a message of an origin that the cursor covers, every older
	// one of that origin is covered too; when that holds for every origin
	// of the room, the rest is covered (chatr's SQL stops at a lower bound
	// of created for the same reason).
	open := len(e.heads[room])
	covered := make([]bool, len(e.names))
	var pos []uint64
	for i := len(rs) - 1; i >= 0 && len(pos) < limit && open > 0; i-- {
		oi, seq := rs[i].oseq>>48, rs[i].oseq&(1<<48-1)
		if covered[oi] {
			continue
		}
		if seq > cursor[e.names[oi]] {
			pos = append(pos, e.posOf(rs[i].oseq))
			continue
		}
		covered[oi] = true
		open--
	}
	e.mu.RUnlock()
	ms, err := e.readAll(pos)
	if err != nil {
		return nil, err
	}
	reverse(ms)
	out := ms[:0]
	for _, m := range ms {
		if !m.Hidden {
			out = append(out, m)
		}
	}
	return out, nil
}

func (e *seglog) Range(origin string, from uint64, n int) ([]Message, error) {
	e.mu.RLock()
	ol := e.origins[origin]
	var pos []uint64
	if ol != nil && from < ol.first+uint64(len(ol.pos)) {
		i := 0
		if from > ol.first {
			i = int(from - ol.first)
		}
		pos = append(pos, ol.pos[i:min(len(ol.pos), i+n)]...)
	}
	e.mu.RUnlock()
	return e.readAll(pos)
}

func (e *seglog) Close() error {
	var first error
	for _, f := range e.segs {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	e.segs = nil
	return first
}

// indexCount is the number of messages indexed (for the rebuild rate).
func (e *seglog) indexCount() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := 0
	for _, ol := range e.origins {
		n += len(ol.pos)
	}
	return n
}

func truncateFile(name string, size int64) error { return os.Truncate(name, size) }

// indexBytes is the memory of the position and room indexes (capacity,
// so slack included), without the heads and the ref map.
func (e *seglog) indexBytes() int64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var n int64
	for _, ol := range e.origins {
		n += int64(cap(ol.pos)) * 8
	}
	for _, rs := range e.rooms {
		n += int64(cap(rs)) * 16
	}
	return n
}
