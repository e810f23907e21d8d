package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The message log: numbered segment files in the data directory's log/
// folder (00000001.log, 00000002.log, ...; never removed, so the first is
// always 1), each a header and then batches, then zeros. A batch is what
// one commit writes, in one write and one fdatasync:
//
//	magic "\xffbat" | length uint32 (of the records) | crc uint32 (CRC-32C of them) | records
//
// and its records (record.go) each have a checksum of their own, which a
// reader checks. Only the writer appends; readers read records at their
// positions.
//
// Each segment is filled with zeros ahead of what is written, a megabyte at
// a time, so a commit's fdatasync writes the changed pages and nothing of
// the file system's own (the file's size changes once a megabyte, not once
// a commit). The end of a segment's batches is the first zeros.
//
// What a crash can leave is a torn last write: part of the last batch, never
// acked (the ack waits for its fdatasync), its pages in any order (a power
// cut may have written a later page and not an earlier one). Open finds it
// at the end of the last segment (a batch that does not check out, with no
// batch that does after it) and zeroes it, with a log line. A batch that
// does not check out anywhere else, or one that does with a record in it
// that does not, is damage: Open refuses the store with the segment and
// offset.
const (
	logDirName = "log"
	segMagic   = "chatrlog"
	segVersion = 1
	segHeader  = 16 // magic, version uint32, number uint32
	// segLimit is the size past which the next commit starts a segment.
	segLimit  = 64 << 20
	zeroChunk = 1 << 20

	batchMagic  = "\xffbat" // 0xff is in no UTF-8 text, nor a record's length
	batchHeader = 12

	// A position is a segment number and an offset in it; the top bit is
	// free for the index's hidden flag.
	posOffsetBits = 40
	maxSegment    = 1<<(63-posOffsetBits) - 1
)

// segLog is the log of one store.
type segLog struct {
	dir  string
	log  *slog.Logger
	mu   sync.RWMutex // guards segs against a rotation while readers look up a file
	segs []*segment   // in order, numbers without gaps; the last is written to
	// Of the last segment, only the writer changes these.
	end    int64 // where the next record goes
	zeroed int64 // bytes of the file written (records, then zeros)
	zeros  []byte
	total  atomic.Int64 // bytes of records in every segment, for /metrics
}

type segment struct {
	num uint32
	f   *os.File
}

func pos(num uint32, off int64) uint64 { return uint64(num)<<posOffsetBits | uint64(off) }

func splitPos(p uint64) (uint32, int64) {
	return uint32(p >> posOffsetBits), int64(p & (1<<posOffsetBits - 1))
}

func segName(num uint32) string { return fmt.Sprintf("%08d.log", num) }

// openLog opens the log in dir/log and calls each with every record in
// log order, with its position. With create, it makes the log (0700) when
// there is none; without, a missing log is an error (the store had one).
// It refuses files that are not segments, links, gaps in the numbering and
// damaged batches, and zeroes a torn last write.
func openLog(dir string, log *slog.Logger, create bool, each func(p uint64, r record) error) (*segLog, error) {
	l := &segLog{dir: filepath.Join(dir, logDirName), log: log, zeros: make([]byte, zeroChunk)}
	if _, err := os.Lstat(l.dir); !create && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the log %s is missing, and chatr.db says this node wrote one: its messages would be lost and their ids used again; restore the data directory from a backup, or remove it to start this node empty (it then catches up from its peers)", l.dir)
	}
	if err := prepareDir(l.dir); err != nil {
		return nil, err
	}
	nums, err := l.list()
	if err != nil {
		return nil, err
	}
	if !create && len(nums) == 0 {
		return nil, fmt.Errorf("the log %s holds no segments, and chatr.db says this node wrote some: restore the data directory from a backup, or remove it to start this node empty (it then catches up from its peers)", l.dir)
	}
	for i, num := range nums {
		last := i == len(nums)-1
		if err := l.load(num, last, each); err != nil {
			l.close()
			return nil, err
		}
	}
	if len(nums) == 0 {
		if err := l.create(1); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// list returns the numbers of the segments, in order, refusing anything
// else in the folder and gaps in the numbering.
func (l *segLog) list() ([]uint32, error) {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", l.dir, err)
	}
	var nums []uint32
	for _, e := range entries {
		name := e.Name()
		n, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 32)
		switch {
		case err != nil || !strings.HasSuffix(name, ".log") || segName(uint32(n)) != name || n == 0 || n > maxSegment:
			return nil, fmt.Errorf("%s holds %s, which is not a log segment: move it away", l.dir, name)
		case e.Type()&fs.ModeSymlink != 0:
			return nil, fmt.Errorf("log segment %s is a symbolic link: chatr follows no links in its data directory", name)
		case !e.Type().IsRegular():
			return nil, fmt.Errorf("log segment %s is not a regular file but %s", name, kind(e.Type()))
		}
		nums = append(nums, uint32(n))
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	if len(nums) > 0 && nums[0] != 1 {
		return nil, fmt.Errorf("log segment %s is missing (the log begins at %s): segments are never removed, so messages are gone", segName(1), segName(nums[0]))
	}
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			return nil, fmt.Errorf("log segment %s is missing (between %s and %s): the log has a hole", segName(nums[i-1]+1), segName(nums[i-1]), segName(nums[i]))
		}
	}
	return nums, nil
}

// load reads segment num, calls each with its records, and keeps it open.
// The last segment becomes the one written to.
func (l *segLog) load(num uint32, last bool, each func(p uint64, r record) error) error {
	name := segName(num)
	path := filepath.Join(l.dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|noFollow, 0)
	if err != nil {
		return fmt.Errorf("open log segment %s: %w", path, err)
	}
	l.segs = append(l.segs, &segment{num: num, f: f})
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("read log segment %s: %w", path, err)
	}
	if len(data) < segHeader || string(data[:8]) != segMagic {
		if last && allZero(data) {
			// Made, but its header never reached the disk: a crash right
			// after a rotation.
			l.log.Warn("store: the newest log segment is empty (a crash as it was made); starting it over", "segment", path)
			l.segs = l.segs[:len(l.segs)-1]
			f.Close()
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("start log segment %s over: %w", path, err)
			}
			return l.create(num)
		}
		return fmt.Errorf("log segment %s has no chatr log header: not a chatr log, or damaged", path)
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v != segVersion {
		return fmt.Errorf("log segment %s is of format %d, not %d (made by a newer chatr?)", path, v, segVersion)
	}
	if n := binary.LittleEndian.Uint32(data[12:]); n != num {
		return fmt.Errorf("log segment %s says it is segment %d: renamed or copied from elsewhere", path, n)
	}
	damaged := func(off int, err error) error {
		return fmt.Errorf("log segment %s is damaged at offset %d (%v): the store is not opened, so nothing more is lost; restore the data directory from a backup, or remove it to start this node empty (it then catches up from its peers)", path, off, err)
	}
	off := segHeader
	for off < len(data) {
		n, err := batchFrame(data[off:])
		if err == nil && n == 0 {
			if allZero(data[off:]) {
				break
			}
			err = fmt.Errorf("%w: zeros with data after them", errBadRecord)
		}
		if err != nil {
			if last && !batchAfter(data[off+1:]) {
				return l.truncateTorn(num, f, data, off, err)
			}
			return damaged(off, err)
		}
		// The batch checks out, so it was written whole: a record in it
		// that does not is damage (or of a format this chatr does not
		// know), never a torn write.
		end := off + batchHeader + n
		at, err := batchRecords(data, off, end, func(at int, r record) error { return each(pos(num, int64(at)), r) })
		switch {
		case errors.Is(err, errBadRecord):
			return damaged(at, err)
		case err != nil:
			return fmt.Errorf("log segment %s at offset %d: %w", path, at, err)
		}
		off = end
	}
	l.total.Add(int64(off - segHeader))
	if last {
		l.end, l.zeroed = int64(off), int64(len(data))
	}
	return nil
}

// batchRecords calls each with every record of the batch data[off:end]
// (one batchFrame checked) and its offset in data, in order. A record that
// does not frame or decode is an error wrapping errBadRecord; either way
// at is the offset of the record the error is about.
func batchRecords(data []byte, off, end int, each func(at int, r record) error) (at int, err error) {
	for at = off + batchHeader; at < end; {
		size, err := frame(data[at:end])
		if err == nil && size == 0 {
			err = fmt.Errorf("%w: length 0", errBadRecord)
		}
		var r record
		if err == nil {
			r, err = decode(data[at+recHeader : at+recHeader+size])
		}
		if err == nil {
			err = each(at, r)
		}
		if err != nil {
			return at, err
		}
		at += recHeader + size
	}
	return at, nil
}

// batchFrame checks the batch at the start of b and returns the length of
// its records: 0 when b starts with zeros (the end of what was written).
func batchFrame(b []byte) (int, error) {
	if len(b) < batchHeader {
		if allZero(b) {
			return 0, nil
		}
		return 0, fmt.Errorf("%w: %d bytes left, a batch header takes %d", errBadRecord, len(b), batchHeader)
	}
	if allZero(b[:batchHeader]) {
		return 0, nil
	}
	if string(b[:4]) != batchMagic {
		return 0, fmt.Errorf("%w: no batch header", errBadRecord)
	}
	n := int(binary.LittleEndian.Uint32(b[4:]))
	switch {
	case n == 0:
		return 0, fmt.Errorf("%w: an empty batch", errBadRecord)
	case n > len(b)-batchHeader:
		return 0, fmt.Errorf("%w: a batch of %d bytes, %d left", errBadRecord, n, len(b)-batchHeader)
	case crc32.Checksum(b[batchHeader:batchHeader+n], crcTable) != binary.LittleEndian.Uint32(b[8:]):
		return 0, fmt.Errorf("%w: batch checksum does not match", errBadRecord)
	}
	return n, nil
}

// batchAfter reports whether a batch that checks out starts anywhere in b:
// then a bad batch before it is damage, not a torn end (a torn write is
// one batch, and no batch header is inside one).
func batchAfter(b []byte) bool {
	for i := 0; ; i++ {
		j := bytes.Index(b[i:], []byte(batchMagic))
		if j < 0 {
			return false
		}
		i += j
		if n, err := batchFrame(b[i:]); err == nil && n > 0 {
			return true
		}
	}
}

// truncateTorn zeroes a torn last write from off on.
func (l *segLog) truncateTorn(num uint32, f *os.File, data []byte, off int, why error) error {
	end := len(data)
	for end > off && data[end-1] == 0 {
		end--
	}
	l.log.Warn("store: the log ends in a torn write (a crash while it was written; it was never acknowledged); dropping it",
		"segment", segName(num), "offset", off, "bytes", end-off, "why", why)
	if _, err := f.WriteAt(make([]byte, end-off), int64(off)); err != nil {
		return fmt.Errorf("drop the torn end of log segment %s: %w", segName(num), err)
	}
	if err := datasync(f); err != nil {
		return fmt.Errorf("drop the torn end of log segment %s: %w", segName(num), err)
	}
	l.total.Add(int64(off - segHeader))
	l.end, l.zeroed = int64(off), int64(len(data))
	return nil
}

func allZero(b []byte) bool {
	return len(bytes.TrimLeft(b, "\x00")) == 0
}

// create makes segment num (header, then zeros), durable with its
// directory entry, and makes it the one written to.
func (l *segLog) create(num uint32) error {
	if num > maxSegment {
		return errors.New("the log has run out of segment numbers")
	}
	path := filepath.Join(l.dir, segName(num))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|noFollow, 0o600)
	if err != nil {
		return fmt.Errorf("create log segment: %w", err)
	}
	hdr := make([]byte, zeroChunk)
	copy(hdr, segMagic)
	binary.LittleEndian.PutUint32(hdr[8:], segVersion)
	binary.LittleEndian.PutUint32(hdr[12:], num)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		f.Close()
		return fmt.Errorf("create log segment %s: %w", path, err)
	}
	if err := errors.Join(datasync(f), syncDir(l.dir)); err != nil {
		f.Close()
		return fmt.Errorf("create log segment %s: %w", path, err)
	}
	l.mu.Lock()
	l.segs = append(l.segs, &segment{num: num, f: f})
	l.mu.Unlock()
	l.end, l.zeroed = segHeader, zeroChunk
	return nil
}

// startBatch appends the room for a batch header to b; the records follow.
func startBatch(b []byte) []byte { return append(b, make([]byte, batchHeader)...) }

// write appends b (a batch: startBatch, then whole records) to the log and
// returns the position of its first byte; sync makes it durable. Only the
// writer calls them.
func (l *segLog) write(b []byte) (uint64, error) {
	copy(b, batchMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-batchHeader))
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[batchHeader:], crcTable))
	if l.end >= segLimit {
		if err := l.create(l.active().num + 1); err != nil {
			return 0, err
		}
	}
	seg := l.active()
	at := l.end
	if need := at + int64(len(b)); need > l.zeroed {
		// Zeros past what this write covers, so that the next commits
		// change no file size.
		if _, err := seg.f.WriteAt(l.zeros, need); err != nil {
			return 0, fmt.Errorf("write log segment %s: %w", segName(seg.num), err)
		}
		l.zeroed = need + zeroChunk
	}
	if _, err := seg.f.WriteAt(b, at); err != nil {
		return 0, fmt.Errorf("write log segment %s: %w", segName(seg.num), err)
	}
	l.end += int64(len(b))
	l.total.Add(int64(len(b)))
	return pos(seg.num, at), nil
}

// position is where the next record goes.
func (l *segLog) position() uint64 { return pos(l.active().num, l.end) }

// bytes is the size of every record in the log.
func (l *segLog) bytes() int64 { return l.total.Load() }

func (l *segLog) sync() error {
	if err := datasync(l.active().f); err != nil {
		return fmt.Errorf("sync log segment %s: %w", segName(l.active().num), err)
	}
	return nil
}

func (l *segLog) active() *segment {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[len(l.segs)-1]
}

// read returns the record at p; buf is scratch space it may grow.
func (l *segLog) read(p uint64, buf *[]byte) (record, error) {
	num, off := splitPos(p)
	l.mu.RLock()
	var f *os.File
	if len(l.segs) > 0 && num >= l.segs[0].num && int(num-l.segs[0].num) < len(l.segs) {
		f = l.segs[num-l.segs[0].num].f
	}
	l.mu.RUnlock()
	if f == nil {
		return record{}, fmt.Errorf("read log: no segment %d", num)
	}
	b := *buf
	if cap(b) < 512 {
		b = make([]byte, 512)
	}
	b = b[:cap(b)]
	n, err := f.ReadAt(b, off)
	if n < recHeader {
		return record{}, fmt.Errorf("read log segment %s at %d: %w", segName(num), off, errors.Join(err, io.ErrUnexpectedEOF))
	}
	if body := int(binary.LittleEndian.Uint32(b)); body <= maxRecord && recHeader+body > n {
		b = append(b[:n], make([]byte, recHeader+body-n)...)
		if _, err := f.ReadAt(b[n:], off+int64(n)); err != nil {
			return record{}, fmt.Errorf("read log segment %s at %d: %w", segName(num), off, err)
		}
	}
	*buf = b
	size, err := frame(b)
	if err == nil && size == 0 {
		err = errBadRecord
	}
	if err != nil {
		return record{}, fmt.Errorf("read log segment %s at %d: %w", segName(num), off, err)
	}
	return decode(b[recHeader : recHeader+size])
}

func (l *segLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	l.segs = nil
	return errors.Join(errs...)
}

// syncDir makes the entries of dir (a new file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err // some systems (Windows) cannot sync a directory; nothing to do there
	}
	return nil
}
