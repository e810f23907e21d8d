package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"chatr/internal/proto"
)

// Tests of bad and hostile log files on disk: a torn last write is
// dropped and everything before it kept; anything else that is not what
// the store writes is refused with an error that says what and where, and
// the refused Open changes nothing in log/.

// closedStore makes a store in a new directory with n messages of its own
// in "lobby", closes it, and returns the directory and the messages.
func closedStore(t *testing.T, n int) (string, []proto.Message) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sent []proto.Message
	for i := 0; i < n; i++ {
		sent = append(sent, mustAppend(t, s, "lobby", fmt.Sprintf("message %d", i)))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, sent
}

func segPath(dir string, num uint32) string {
	return filepath.Join(dir, logDirName, segName(num))
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// segHeaderBytes is the header of segment num.
func segHeaderBytes(num uint32) []byte {
	h := make([]byte, segHeader)
	copy(h, segMagic)
	binary.LittleEndian.PutUint32(h[8:], segVersion)
	binary.LittleEndian.PutUint32(h[12:], num)
	return h
}

// writeSegment writes segment num of dir by hand: its header, recs in one
// batch (none when empty), then zeros, as the store leaves it.
func writeSegment(t *testing.T, dir string, num uint32, recs []byte) {
	t.Helper()
	if len(recs) == 0 {
		writeSegmentRaw(t, dir, num, nil)
		return
	}
	writeSegmentRaw(t, dir, num, batch(recs))
}

// writeSegmentRaw writes segment num: its header, raw, then zeros.
func writeSegmentRaw(t *testing.T, dir string, num uint32, raw []byte) {
	t.Helper()
	b := append(segHeaderBytes(num), raw...)
	b = append(b, make([]byte, 4096)...)
	writeFile(t, segPath(dir, num), b)
}

// batch frames recs as one batch, as a commit writes it.
func batch(recs []byte) []byte {
	b := append(startBatch(nil), recs...)
	copy(b, batchMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(recs)))
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(recs, crcTable))
	return b
}

// batchOffsets returns the offset of each batch of a segment's data (one
// per commit), and where the batches end.
func batchOffsets(t *testing.T, data []byte) (offs []int, end int) {
	t.Helper()
	offs, _, end, err := segRecords(data)
	if err != nil {
		t.Fatalf("segment: %v", err)
	}
	return offs, end
}

// messages is every message of origin in the store, in seq order.
func messages(t *testing.T, s *Store, origin string) []proto.Message {
	t.Helper()
	ms, err := s.Range(context.Background(), origin, 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// wantSame fails unless got are exactly want, in order.
func wantSame(t *testing.T, what string, got, want []proto.Message) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: the store holds %v, want %v", what, ids(got), ids(want))
	}
}

// msgRecs is the records of msgs.
func msgRecs(msgs ...proto.Message) []byte {
	var b []byte
	for i := range msgs {
		b = appendMessage(b, &msgs[i])
	}
	return b
}

// wantRefused opens dir, which must be refused with an error naming each
// of mention; neither that Open nor a second one may change log/. It
// returns the error.
func wantRefused(t *testing.T, dir string, mention ...string) error {
	t.Helper()
	logDir := filepath.Join(dir, logDirName)
	before := snapshotLinks(t, logDir)
	s, err := Open(dir, Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open accepted it")
	}
	t.Log(err)
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
	if s, err := Open(dir, Options{}); err == nil {
		s.Close()
		t.Fatal("a second Open accepted it")
	}
	if after := snapshotLinks(t, logDir); !reflect.DeepEqual(before, after) {
		t.Errorf("a refused Open changed log/:\n%s", diffDirs(before, after))
	}
	return err
}

// TestLogTornTailDropped: bytes after the last batch of the last segment
// that do not make a batch (a torn last write) are zeroed at Open; every
// message before them is still there, and the next message goes where the
// torn bytes were and survives a restart.
func TestLogTornTailDropped(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	random := make([]byte, 3000)
	rng.Read(random)
	huge := []byte(batchMagic + "\xff\xff\xff\x7f\xef\xbe\xad\xde")
	// A batch of many records, as a busy commit writes it.
	var many []byte
	for i := range 200 {
		many = appendMessage(many, &proto.Message{Origin: peerA, Seq: uint64(i + 1), Room: "lobby", Text: strings.Repeat("x", 100), Created: int64(i + 1)})
	}
	tests := []struct {
		name string
		torn func(last []byte) []byte // the torn bytes; last is the last batch
	}{
		{"first half of a batch", func(last []byte) []byte { return last[:len(last)/2] }},
		{"the next batch short of its last byte", func([]byte) []byte {
			// Not a copy of the last batch: its last byte is a zero,
			// which the zeros after it would give back.
			next := batch(appendMessage(nil, &proto.Message{Origin: peerA, Seq: 1, Room: "lobby", Text: "cut", Replaces: "x"}))
			return next[:len(next)-1]
		}},
		{"a batch header only", func(last []byte) []byte { return last[:batchHeader] }},
		{"half a batch header", func(last []byte) []byte { return last[:batchHeader/2] }},
		{"a batch with a wrong checksum", func(last []byte) []byte {
			b := bytes.Clone(last)
			b[len(b)-3] ^= 0xff
			return b
		}},
		{"random bytes", func([]byte) []byte { return random }},
		{"a length over what is left", func([]byte) []byte { return huge }},
		{"zeros with bytes after them", func(last []byte) []byte {
			return append(make([]byte, batchHeader), last[:len(last)/2]...)
		}},
		{"bytes a page past the batches", func([]byte) []byte {
			return append(make([]byte, 4096), random[:100]...)
		}},
		// A power cut may write a later page of a batch and not an earlier
		// one: whole records with zeros before them are still one torn
		// batch, not damage.
		{"a big batch without its first page", func([]byte) []byte {
			b := batch(many)
			clear(b[:4096])
			return b
		}},
		{"a big batch without a page in its middle", func([]byte) []byte {
			b := batch(many)
			clear(b[4096:8192])
			return b
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, sent := closedStore(t, 5)
			path := segPath(dir, 1)
			data := readFile(t, path)
			offs, end := batchOffsets(t, data)
			last := data[offs[len(offs)-1]:end]
			torn := tc.torn(last)
			if allZero(torn) {
				t.Fatal("the test's torn bytes are all zeros")
			}
			copy(data[end:], torn)
			writeFile(t, path, data)

			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("Open refused a log with a torn tail: %v", err)
			}
			wantSame(t, "after a torn tail", messages(t, s, s.NodeID()), sent)
			if after := readFile(t, path); !allZero(after[end:]) || !bytes.Equal(after[:end], data[:end]) {
				t.Errorf("the torn bytes were not zeroed, or the records before them changed")
			}
			sent = append(sent, mustAppend(t, s, "lobby", "after the torn tail"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir)
			wantSame(t, "after a restart", messages(t, s, s.NodeID()), sent)
		})
	}
}

// TestLogTornTailOfSecondSegment: a torn tail of the last segment, when
// there are two, is dropped, and the messages of both segments are kept.
func TestLogTornTailOfSecondSegment(t *testing.T) {
	dir, sent := closedStore(t, 3)
	peer := []proto.Message{peerMsg(peerA, 1, "lobby", 100), peerMsg(peerA, 2, "lobby", 200)}
	recs := batch(msgRecs(peer...))
	half := batch(appendMessage(nil, &proto.Message{Origin: peerA, Seq: 3, Room: "lobby", Text: "torn"}))
	writeSegmentRaw(t, dir, 2, append(recs, half[:len(half)/2]...))

	s := openStore(t, dir)
	wantSame(t, "own messages (segment 1)", messages(t, s, s.NodeID()), sent)
	wantSame(t, "peer messages (segment 2)", messages(t, s, peerA), peer)
	if after := readFile(t, segPath(dir, 2)); !allZero(after[segHeader+len(recs):]) {
		t.Error("the torn bytes of segment 2 were not zeroed")
	}
	m := mustAppend(t, s, "lobby", "after")
	s.Close()
	s = openStore(t, dir)
	wantSame(t, "after a restart", messages(t, s, s.NodeID()), append(sent, m))
	wantSame(t, "peer messages after a restart", messages(t, s, peerA), peer)
}

// TestLogDamageRefused: a batch that does not check out with valid batches
// after it is damage, not a torn write: Open refuses the store with the
// segment, the offset and "damaged", and changes nothing.
func TestLogDamageRefused(t *testing.T) {
	// rehash makes the batch's checksum match what it holds now, so that
	// only the damaged record inside does not check out.
	rehash := func(b []byte) {
		binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[batchHeader:], crcTable))
	}
	tests := []struct {
		name   string
		damage func(b []byte) // b is the second batch of five (one record each), in place
		why    string         // in the error
		inside bool           // the error is at the record, not the batch
	}{
		{"a flipped byte in a record", func(b []byte) { b[len(b)-3] ^= 0x01 }, "batch checksum", false},
		{"a flipped byte in the batch checksum", func(b []byte) { b[9] ^= 0x80 }, "batch checksum", false},
		{"a batch length one too long", func(b []byte) {
			binary.LittleEndian.PutUint32(b[4:], binary.LittleEndian.Uint32(b[4:])+1)
		}, "batch checksum", false},
		{"the largest batch length", func(b []byte) {
			binary.LittleEndian.PutUint32(b[4:], 0xffffffff)
		}, "a batch of 4294967295 bytes", false},
		{"a batch length of 0", func(b []byte) { binary.LittleEndian.PutUint32(b[4:], 0) }, "an empty batch", false},
		{"no batch magic", func(b []byte) { b[0] = 'x' }, "no batch header", false},
		{"zeros over the batch", func(b []byte) { clear(b) }, "zeros with data after them", false},
		{"a record whose checksum is wrong in a batch whose is right", func(b []byte) {
			b[len(b)-3] ^= 0x01
			rehash(b)
		}, "checksum does not match", true},
		{"a record length over maxRecord in a batch whose checksum is right", func(b []byte) {
			binary.LittleEndian.PutUint32(b[batchHeader:], maxRecord+1)
			rehash(b)
		}, fmt.Sprint("length ", maxRecord+1), true},
		{"a record of a kind this chatr does not know", func(b []byte) {
			rec := b[batchHeader:]
			rec[recHeader] = 9
			binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[recHeader:], crcTable))
			rehash(b)
		}, "kind 9", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := closedStore(t, 5)
			path := segPath(dir, 1)
			data := readFile(t, path)
			offs, _ := batchOffsets(t, data)
			tc.damage(data[offs[1]:offs[2]])
			writeFile(t, path, data)
			at := offs[1]
			if tc.inside {
				at += batchHeader
			}
			wantRefused(t, dir, path, "damaged", fmt.Sprint("offset ", at), tc.why)
		})
	}
}

// TestLogDamageInEarlierSegmentRefused: in a segment that is not the last,
// a bad record is damage even with nothing valid after it in that
// segment (only the last segment can end in a torn write).
func TestLogDamageInEarlierSegmentRefused(t *testing.T) {
	tests := []struct {
		name   string
		damage func(data []byte, offs []int, end int)
	}{
		{"a flipped byte in its last record", func(data []byte, offs []int, end int) { data[end-1] ^= 0x01 }},
		{"a flipped byte in its first record", func(data []byte, offs []int, end int) { data[offs[0]+batchHeader+recHeader] ^= 0x01 }},
		{"half a batch after its batches", func(data []byte, offs []int, end int) {
			copy(data[end:], data[offs[0]:offs[0]+(offs[1]-offs[0])/2])
		}},
		{"bytes after its zeros", func(data []byte, offs []int, end int) { data[len(data)-1] = 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := closedStore(t, 3)
			writeSegment(t, dir, 2, msgRecs(peerMsg(peerA, 1, "lobby", 100)))
			path := segPath(dir, 1)
			data := readFile(t, path)
			offs, end := batchOffsets(t, data)
			tc.damage(data, offs, end)
			writeFile(t, path, data)
			wantRefused(t, dir, path, "damaged")
		})
	}
}

// TestLogForeignFilesRefused: log/ holds segments and nothing else:
// another file, a link, a directory or a pipe in it, or a hole in the
// numbering, is refused with its name and what is wrong.
func TestLogForeignFilesRefused(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, logDir string)
		mention []string
	}{
		{"notes.txt", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, "notes.txt"), []byte("my notes\n"))
		}, []string{"notes.txt", "not a log segment"}},
		{"1.log", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, "1.log"), segHeaderBytes(1))
		}, []string{"1.log", "not a log segment"}},
		{"00000000.log", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, "00000000.log"), segHeaderBytes(0))
		}, []string{"00000000.log", "not a log segment"}},
		{"nine digits", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, "000000002.log"), segHeaderBytes(2))
		}, []string{"000000002.log", "not a log segment"}},
		{"a number past the last segment", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, segName(maxSegment+1)), nil)
		}, []string{segName(maxSegment + 1), "not a log segment"}},
		{"an editor's backup", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, "00000001.log~"), nil)
		}, []string{"00000001.log~", "not a log segment"}},
		{"a hidden file", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, ".00000002.log"), nil)
		}, []string{".00000002.log", "not a log segment"}},
		{"a directory of other files", func(t *testing.T, logDir string) {
			if err := os.Mkdir(filepath.Join(logDir, "old"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, []string{"old", "not a log segment"}},
		{"a segment that is a symbolic link", func(t *testing.T, logDir string) {
			elsewhere := filepath.Join(t.TempDir(), "victim")
			writeFile(t, elsewhere, append(segHeaderBytes(2), make([]byte, 4096)...))
			symlink(t, elsewhere, filepath.Join(logDir, segName(2)))
		}, []string{segName(2), "symbolic link"}},
		{"a segment that is a dangling symbolic link", func(t *testing.T, logDir string) {
			symlink(t, filepath.Join(t.TempDir(), "nothing"), filepath.Join(logDir, segName(2)))
		}, []string{segName(2), "symbolic link"}},
		{"a segment that is a directory", func(t *testing.T, logDir string) {
			if err := os.Mkdir(filepath.Join(logDir, segName(2)), 0o700); err != nil {
				t.Fatal(err)
			}
		}, []string{segName(2), "not a regular file", "a directory"}},
		{"a segment that is a named pipe", func(t *testing.T, logDir string) {
			// Opening a pipe blocks until a writer comes: Open would hang.
			if err := syscall.Mkfifo(filepath.Join(logDir, segName(2)), 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, []string{segName(2), "not a regular file", "a named pipe"}},
		{"a hole in the numbering", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, segName(3)), segHeaderBytes(3))
		}, []string{segName(2), "missing", segName(1), segName(3)}},
		{"a hole after two segments", func(t *testing.T, logDir string) {
			writeFile(t, filepath.Join(logDir, segName(2)), segHeaderBytes(2))
			writeFile(t, filepath.Join(logDir, segName(5)), segHeaderBytes(5))
		}, []string{segName(3), "missing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := closedStore(t, 2)
			logDir := filepath.Join(dir, logDirName)
			tc.setup(t, logDir)
			var target map[string]string
			if fi, err := os.Lstat(segPath(dir, 2)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				link, _ := os.Readlink(segPath(dir, 2))
				target = snapshotLinks(t, filepath.Dir(link))
			}
			wantRefused(t, dir, append([]string{dir}, tc.mention...)...)
			if target != nil {
				link, _ := os.Readlink(segPath(dir, 2))
				if after := snapshotLinks(t, filepath.Dir(link)); !reflect.DeepEqual(target, after) {
					t.Errorf("a refused Open changed the file the link points to:\n%s", diffDirs(target, after))
				}
			}
		})
	}
}

// TestLogFirstSegmentMissingRefused: a log whose first segment is gone
// (segments are never removed) is refused, like a hole, rather than opened
// without its messages.
func TestLogFirstSegmentMissingRefused(t *testing.T) {
	dir, sent := closedStore(t, 3)
	writeSegment(t, dir, 2, nil)
	if err := os.Remove(segPath(dir, 1)); err != nil {
		t.Fatal(err)
	}
	if err := wantRefused(t, dir, segName(1), "missing"); err == nil {
		t.Fatalf("%d messages are gone", len(sent))
	}
}

// TestLogSegmentHeaderRefused: a segment whose header is not a chatr log
// header of this format and number is refused, each with its own message,
// in the last segment and in an earlier one.
func TestLogSegmentHeaderRefused(t *testing.T) {
	tests := []struct {
		name    string
		change  func(data []byte) []byte // makes segment num's file from what it was
		mention []string
	}{
		{"wrong magic", func(data []byte) []byte { copy(data, "chatrLOG"); return data }, []string{"no chatr log header"}},
		{"another program's file", func([]byte) []byte {
			return []byte("# my notes, not a log at all\nmore notes\n")
		}, []string{"no chatr log header"}},
		{"a few bytes of a header", func(data []byte) []byte { return data[:10] }, []string{"no chatr log header"}},
		{"a newer version", func(data []byte) []byte {
			binary.LittleEndian.PutUint32(data[8:], segVersion+1)
			return data
		}, []string{fmt.Sprintf("of format %d, not %d", segVersion+1, segVersion)}},
		{"version 0", func(data []byte) []byte {
			binary.LittleEndian.PutUint32(data[8:], 0)
			return data
		}, []string{fmt.Sprintf("of format 0, not %d", segVersion)}},
		{"the number of another segment", func(data []byte) []byte {
			binary.LittleEndian.PutUint32(data[12:], 7)
			return data
		}, []string{"says it is segment 7", "renamed or copied"}},
	}
	for _, tc := range tests {
		for _, num := range []uint32{1, 2} {
			t.Run(fmt.Sprintf("%s in segment %d of 2", tc.name, num), func(t *testing.T) {
				dir, _ := closedStore(t, 3)
				writeSegment(t, dir, 2, msgRecs(peerMsg(peerA, 1, "lobby", 100)))
				path := segPath(dir, num)
				writeFile(t, path, tc.change(readFile(t, path)))
				wantRefused(t, dir, append([]string{path}, tc.mention...)...)
			})
		}
	}
}

// TestLogEmptyLastSegment: a last segment that holds no record (a crash
// just as it was made: no bytes, or its header and zeros) is started over,
// and the messages of the segments before it are all kept.
func TestLogEmptyLastSegment(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		bug  string
	}{
		{"no bytes", nil, ""},
		{"a few zeros", make([]byte, 10), ""},
		{"its header only", segHeaderBytes(2), ""},
		{"its header and zeros", append(segHeaderBytes(2), make([]byte, zeroChunk-segHeader)...), ""},
		// create writes the header and a zero chunk in one write; a crash
		// before its sync may leave the size and not the header.
		{"zeros as long as a header", make([]byte, segHeader), ""},
		{"a zero chunk of zeros", make([]byte, zeroChunk), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bug != "" {
				t.Skip(tc.bug)
			}
			dir, sent := closedStore(t, 4)
			writeFile(t, segPath(dir, 2), tc.data)
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("Open refused an empty last segment: %v", err)
			}
			wantSame(t, "after an empty last segment", messages(t, s, s.NodeID()), sent)
			if data := readFile(t, segPath(dir, 2)); !bytes.Equal(data[:segHeader], segHeaderBytes(2)) {
				t.Errorf("segment 2 starts %q after Open, not with its header", data[:segHeader])
			}
			sent = append(sent, mustAppend(t, s, "lobby", "into segment 2"))
			s.Close()
			s = openStore(t, dir)
			wantSame(t, "after a restart", messages(t, s, s.NodeID()), sent)
			if data := readFile(t, segPath(dir, 2)); len(data) < segHeader+recHeader || allZero(data[segHeader:]) {
				t.Error("the message after the restart is not in segment 2")
			}
		})
	}
}

// TestLogRecordsRefused: records that check out but break the log's rules
// (a change to a message not held before it, a message that does not
// follow its origin's last) are refused with the segment, the offset and
// the message id, in the middle of the log and as its last record.
func TestLogRecordsRefused(t *testing.T) {
	a1, a2, a3 := peerMsg(peerA, 1, "lobby", 100), peerMsg(peerA, 2, "lobby", 200), peerMsg(peerA, 3, "lobby", 300)
	hide := func(origin string, seq uint64) []byte {
		return appendChange(nil, &change{hide: true, room: "lobby", origin: origin, seq: seq})
	}
	replace := func(origin string, seq uint64) []byte {
		return appendChange(nil, &change{room: "lobby", origin: origin, seq: seq, replaces: proto.MessageID(peerB, 1)})
	}
	tests := []struct {
		name    string
		bad     []byte // after the records of good
		good    []proto.Message
		mention []string
	}{
		{"a hide of a later message", hide(peerA, 3), []proto.Message{a1, a2},
			[]string{"change to " + proto.MessageID(peerA, 3), "does not hold"}},
		{"a hide before its message", hide(peerA, 1), nil,
			[]string{"change to " + proto.MessageID(peerA, 1), "does not hold"}},
		{"a hide of an origin never seen", hide(peerB, 1), []proto.Message{a1},
			[]string{"change to " + proto.MessageID(peerB, 1), "does not hold"}},
		{"a replace of a later message", replace(peerA, 2), []proto.Message{a1},
			[]string{"change to " + proto.MessageID(peerA, 2), "does not hold"}},
		{"a replace of an origin never seen", replace(peerB, 1), []proto.Message{a1},
			[]string{"change to " + proto.MessageID(peerB, 1), "does not hold"}},
		{"a seq gap", msgRecs(a3), []proto.Message{a1},
			[]string{proto.MessageID(peerA, 3), "gap"}},
		{"an origin that starts at 2", msgRecs(a2), nil,
			[]string{proto.MessageID(peerA, 2), "gap"}},
		{"a seq repeated", msgRecs(a1), []proto.Message{a1},
			[]string{proto.MessageID(peerA, 1), "twice"}},
		{"a seq past what the index holds", msgRecs(peerMsg(peerA, seqMask+1, "lobby", 100)), nil,
			[]string{proto.MessageID(peerA, seqMask+1), "sequence over"}},
	}
	for _, tc := range tests {
		for _, at := range []string{"middle", "end"} {
			t.Run(tc.name+" at the "+at, func(t *testing.T) {
				dir, _ := closedStore(t, 0)
				recs := append(msgRecs(tc.good...), tc.bad...)
				if at == "middle" {
					recs = append(recs, msgRecs(peerMsg(peerB, 1, "dev", 400))...)
				}
				writeSegment(t, dir, 1, recs)
				off := segHeader + batchHeader + len(msgRecs(tc.good...))
				wantRefused(t, dir, append([]string{segPath(dir, 1), fmt.Sprint("offset ", off)}, tc.mention...)...)
			})
		}
	}
}

// TestLogChangeOfAnotherRoomRefused: a change names its message's room
// too; one naming another room than the message's is refused.
func TestLogChangeOfAnotherRoomRefused(t *testing.T) {
	dir, _ := closedStore(t, 0)
	a1 := peerMsg(peerA, 1, "lobby", 100)
	bad := appendChange(nil, &change{hide: true, room: "dev", origin: peerA, seq: 1})
	writeSegment(t, dir, 1, append(msgRecs(a1), bad...))
	wantRefused(t, dir, segPath(dir, 1), proto.MessageID(peerA, 1), "dev")
}

// TestLogUndecodableLastRecordRefused: a last record whose length and
// checksum check out but whose body does not parse (another kind, a bad
// id) is not a torn write, which cannot match its checksum: it is refused
// like one in the middle, not zeroed.
func TestLogUndecodableLastRecordRefused(t *testing.T) {
	for _, body := range [][]byte{
		{9, 1, 2, 3},                          // a kind this version does not know
		{recHide, 5, 'l', 'o', 'b', 'b', 'y'}, // a change cut short
	} {
		dir, _ := closedStore(t, 0)
		a1 := peerMsg(peerA, 1, "lobby", 100)
		bad := appendRecord(nil, func(b []byte) []byte { return append(b, body...) })
		writeSegment(t, dir, 1, append(msgRecs(a1), bad...))
		wantRefused(t, dir, segPath(dir, 1), "damaged")
	}
}

// TestLogDirRefused: a log/ that is a link, not a directory, or writable
// by others is refused.
func TestLogDirRefused(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, logDir string)
		mention []string
	}{
		{"a symbolic link", func(t *testing.T, logDir string) {
			elsewhere := filepath.Join(t.TempDir(), "log")
			if err := os.Rename(logDir, elsewhere); err != nil {
				t.Fatal(err)
			}
			symlink(t, elsewhere, logDir)
		}, []string{"symbolic link"}},
		{"a file", func(t *testing.T, logDir string) {
			if err := os.RemoveAll(logDir); err != nil {
				t.Fatal(err)
			}
			writeFile(t, logDir, []byte("not a directory"))
		}, []string{"not a directory"}},
		{"writable by others", func(t *testing.T, logDir string) {
			if err := os.Chmod(logDir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, []string{"writable by group or others"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "writable by others" && !unixModes {
				t.Skip("no file modes here")
			}
			dir, _ := closedStore(t, 2)
			logDir := filepath.Join(dir, logDirName)
			tc.setup(t, logDir)
			before := snapshotLinks(t, dir)
			s, err := Open(dir, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted it")
			}
			t.Log(err)
			for _, m := range append([]string{logDir}, tc.mention...) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if after := snapshotLinks(t, dir); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused Open changed the data directory:\n%s", diffDirs(before, after))
			}
		})
	}
}

// TestLogDirMissingRefused: a store that has a log, whose log/ is gone, is
// refused rather than opened empty under its old node id.
func TestLogDirMissingRefused(t *testing.T) {
	dir, _ := closedStore(t, 3)
	if err := os.RemoveAll(filepath.Join(dir, logDirName)); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, Options{}); err == nil {
		s.Close()
		t.Fatal("Open accepted a store whose log is gone")
	}
}

// FuzzDecodeRecord: frame and decode never panic on any bytes, and a
// record they accept encodes to one that decodes to the same record, and
// encodes again to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	m := proto.Message{Origin: peerA, Seq: 7, Room: "lobby", Sender: "ann", User: "u1", Text: "hello, world",
		Created: 1_700_000_000_000_000, Ref: "r1", Hidden: true, Replaces: proto.MessageID(peerB, 3)}
	f.Add(appendMessage(nil, &m))
	f.Add(appendMessage(nil, &proto.Message{Origin: peerB, Seq: proto.MaxSeq, Created: -1}))
	f.Add(appendChange(nil, &change{hide: true, room: "lobby", origin: peerA, seq: 1}))
	f.Add(appendChange(nil, &change{room: "lobby", origin: peerA, seq: 2, replaces: proto.MessageID(peerB, 1)}))
	f.Add(make([]byte, recHeader))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		// As the log reads it: a framed record.
		if n, err := frame(b); err == nil && n > 0 {
			if r, err := decode(b[recHeader : recHeader+n]); err == nil {
				checkRoundTrip(t, r)
			}
		}
		// The bytes as a body, so that the fuzzer reaches the decoder
		// without having to match a checksum.
		if r, err := decode(b); err == nil {
			checkRoundTrip(t, r)
		}
	})
}

// checkRoundTrip encodes r, decodes it again and checks it is the same.
func checkRoundTrip(t *testing.T, r record) {
	t.Helper()
	enc := encodeRecord(r)
	n, err := frame(enc)
	if err != nil || n != len(enc)-recHeader {
		t.Fatalf("the encoding of %+v does not frame: n %d of %d, %v", r, n, len(enc)-recHeader, err)
	}
	r2, err := decode(enc[recHeader:])
	if err != nil {
		t.Fatalf("the encoding of %+v does not decode: %v", r, err)
	}
	if r2 != r {
		t.Fatalf("decoded %+v, encoded and decoded again %+v", r, r2)
	}
	if enc2 := encodeRecord(r2); !bytes.Equal(enc, enc2) {
		t.Fatalf("record %+v encodes to %x, then to %x", r, enc, enc2)
	}
}

// encodeRecord is the record of r, as the store writes it.
func encodeRecord(r record) []byte {
	if r.kind == recMessage {
		return appendMessage(nil, &r.msg)
	}
	return appendChange(nil, &change{hide: r.kind == recHide, room: r.msg.Room, origin: r.msg.Origin,
		seq: r.msg.Seq, replaces: r.msg.Replaces})
}
