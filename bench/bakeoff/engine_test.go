package main

import (
	"reflect"
	"testing"
)

// TestEngines checks, for every engine, that what is committed is read
// back by room (Latest, Since) and by origin (Range), before and after a
// close and reopen.
func TestEngines(t *testing.T) {
	for _, spec := range engines {
		t.Run(spec.name, func(t *testing.T) {
			dir := t.TempDir()
			e, err := spec.open(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			g := newGen(3, 9)
			batches := append(localBatches(7)(g, 40), mixBatches(5)(g, 300)...)
			batches = append(batches, replBatches(g, 600)...)
			for _, b := range batches {
				if err := e.Commit(b); err != nil {
					t.Fatal(err)
				}
			}
			check(t, e, batches)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if e, err = spec.open(dir); err != nil {
				t.Fatal(err)
			}
			check(t, e, batches)
			// Appends after a reopen follow on.
			more := localBatches(3)(g, 10)
			for _, b := range more {
				if err := e.Commit(b); err != nil {
					t.Fatal(err)
				}
			}
			check(t, e, append(batches, more...))
		})
	}
}

func check(t *testing.T, e Engine, batches [][]Message) {
	t.Helper()
	log := map[string][]Message{}
	for _, b := range batches {
		for _, m := range b {
			log[m.Origin] = append(log[m.Origin], m)
		}
	}
	for room, want := range roomOrder(batches) {
		got, err := e.Latest(room, 20)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want[len(want)-20:]) {
			t.Errorf("Latest(%s, 20): got %d messages, want the newest 20 of %d:\n got %v\nwant %v", room, len(got), len(want), got, want[len(want)-20:])
		}
		for _, k := range []int{0, 1, 30, len(want)} {
			got, err := e.Since(room, cursorBefore(want, k), 1000)
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 && len(got) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, want[len(want)-k:]) {
				t.Errorf("Since(%s) of the last %d: got %d messages", room, k, len(got))
			}
		}
		got, err = e.Since(room, cursorBefore(want, 30), 10)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want[len(want)-10:]) {
			t.Errorf("Since(%s) limit 10 of 30: got %d messages, want the newest 10", room, len(got))
		}
	}
	for origin, want := range log {
		for _, from := range []uint64{1, 5, uint64(len(want))} {
			got, err := e.Range(origin, from, 50)
			if err != nil {
				t.Fatal(err)
			}
			w := want[from-1 : min(len(want), int(from-1)+50)]
			if !reflect.DeepEqual(got, w) {
				t.Errorf("Range(%s, %d, 50): got %d messages, want %d", origin, from, len(got), len(w))
			}
		}
		if got, _ := e.Range(origin, uint64(len(want))+1, 50); len(got) != 0 {
			t.Errorf("Range(%s) past the end: got %d messages", origin, len(got))
		}
	}
}

// TestSeglogTornTail checks that a commit cut off in the middle is dropped
// at reopen and the log goes on after the last whole one.
func TestSeglogTornTail(t *testing.T) {
	dir := t.TempDir()
	e, err := openSeglog(dir, seglogOptions{SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(2, 5)
	batches := localBatches(10)(g, 100) // several segments of 4 KB
	for _, b := range batches {
		if err := e.Commit(b); err != nil {
			t.Fatal(err)
		}
	}
	last := e.segs[len(e.segs)-1]
	st, _ := last.Stat()
	e.Close()
	if err := truncateFile(last.Name(), st.Size()-5); err != nil {
		t.Fatal(err)
	}
	e, err = openSeglog(dir, seglogOptions{SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if n := e.indexCount(); n != 99 {
		t.Fatalf("after a torn tail: %d messages, want 99", n)
	}
	if got, _ := e.Range(origins[0], 99, 5); len(got) != 1 || got[0].Seq != 99 {
		t.Fatalf("Range after a torn tail: %v", got)
	}
	// The torn message's seq is free again: the next commit reuses it.
	redo := batches[len(batches)-1][9:]
	if err := e.Commit(redo); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Range(origins[0], 100, 5); len(got) != 1 || got[0] != redo[0] {
		t.Fatalf("Range after the redo: %v", got)
	}
}
