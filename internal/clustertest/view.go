package clustertest

import (
	"fmt"
	"slices"
	"sync"

	"chatr/internal/client"
	"chatr/internal/proto"
)

// View is what one chat client was shown of its rooms, over all its
// sessions, kept as a user sees it: each message frame shows a message;
// the Replaces of a message, and a hidden frame, name one to drop. It is
// safe for concurrent use.
type View struct {
	mu      sync.Mutex
	shown   map[string][]client.Frame // room -> messages in the order shown
	times   map[string]int            // message id -> times shown
	dropped map[string]bool           // ids the client was told to drop
}

// NewView returns an empty view.
func NewView() *View {
	return &View{shown: map[string][]client.Frame{}, times: map[string]int{}, dropped: map[string]bool{}}
}

// Take records a server frame: a message frame is shown, and drops the id
// it replaces; a hidden frame drops its id. Other frames change nothing.
func (v *View) Take(f client.Frame) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch f.Type {
	case client.TypeMessage:
		if f.Replaces != "" {
			v.dropped[f.Replaces] = true
		}
		v.shown[f.Room] = append(v.shown[f.Room], f)
		v.times[f.ID]++
	case client.TypeHidden:
		v.dropped[f.ID] = true
	}
}

// Shown is room's messages as the client shows them: in the order they
// came, less those it was told to drop.
func (v *View) Shown(room string) []client.Frame {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(v.shown[room]), func(f client.Frame) bool { return v.dropped[f.ID] })
}

// Times is how many times message id was shown, dropped or not.
func (v *View) Times(id string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.times[id]
}

// WrongDelivery is a difference between a view and the nodes' history
// that no wait mends: a message shown twice, out of its origin's order, or
// not as the nodes list it.
type WrongDelivery struct{ Err error }

func (e WrongDelivery) Error() string { return e.Err.Error() }

func (e WrongDelivery) Unwrap() error { return e.Err }

// Compare checks that client name shows exactly h, room's history as the
// nodes list it: each message once over all its sessions (a message shown
// twice is a WrongDelivery even if dropped later), each as the nodes list
// it, each origin's in order, none missing, none other, and no text more
// often than the nodes list it (two copies of one send, the hidden one
// never dropped). Errors other
// than a WrongDelivery may mend as messages and drops arrive.
func (v *View) Compare(name, room string, h []proto.MessageJSON) error {
	v.mu.Lock()
	all := slices.Clone(v.shown[room])
	times := make(map[string]int, len(all))
	for _, f := range all {
		times[f.ID] = v.times[f.ID]
	}
	got := slices.DeleteFunc(slices.Clone(all), func(f client.Frame) bool { return v.dropped[f.ID] })
	v.mu.Unlock()
	for _, f := range all {
		if times[f.ID] > 1 {
			return WrongDelivery{fmt.Errorf("%s was shown %s of %s %d times", name, f.ID, room, times[f.ID])}
		}
	}
	want := make(map[string]proto.MessageJSON, len(h))
	listed := map[string]int{} // text -> times the nodes list it
	for _, m := range h {
		want[m.ID] = m
		listed[m.Text]++
	}
	byText := map[string][]string{}
	for _, f := range got {
		byText[f.Text] = append(byText[f.Text], f.ID)
		if ids := byText[f.Text]; len(ids) > max(1, listed[f.Text]) {
			return fmt.Errorf("%s shows %q of %s %d times, as %v, the nodes list it %d times: a hidden copy it was never told to drop (no replaces, no hidden frame)",
				name, f.Text, room, len(ids), ids, listed[f.Text])
		}
	}
	last := map[string]uint64{} // origin -> last sequence shown
	for _, f := range got {
		m, ok := want[f.ID]
		if !ok {
			return fmt.Errorf("%s shows %s in %s, which the nodes do not list there (yet)", name, f.ID, room)
		}
		if f.Sender != m.Sender || f.Text != m.Text || f.Created != m.Created || f.Node != m.Node {
			return WrongDelivery{fmt.Errorf("%s was shown %s as %s/%q/%s/%s, the nodes list %s/%q/%s/%s", name, f.ID,
				f.Sender, f.Text, f.Created, f.Node, m.Sender, m.Text, m.Created, m.Node)}
		}
		origin, seq, err := proto.ParseMessageID(f.ID)
		if err != nil {
			return err
		}
		if seq <= last[origin] {
			return WrongDelivery{fmt.Errorf("%s was shown %s after %s-%d: out of its origin's order", name, f.ID, origin, last[origin])}
		}
		last[origin] = seq
	}
	if len(got) != len(h) {
		var missing []string
		for _, m := range h {
			if !slices.ContainsFunc(got, func(f client.Frame) bool { return f.ID == m.ID }) {
				missing = append(missing, m.ID)
			}
		}
		if len(missing) > 5 {
			missing = append(missing[:5], "...")
		}
		return fmt.Errorf("%s shows %d messages of %s, the nodes list %d; it lacks %v", name, len(got), room, len(h), missing)
	}
	return nil
}
