package wire

import (
	"reflect"
	"strings"
	"testing"
)

var sampleBatch = []Msg{
	{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "ann", Text: "hello", Created: 1_700_000_000_000_000, Ref: "r1"},
	{Origin: "0123456789ab", Seq: 2, Room: "lobby", Sender: "bob", Text: "héllo ✓ <b>", Created: 1_700_000_000_000_001},
	{Origin: "abcdef012345", Seq: 300, Room: "dev-2", Sender: "Zoë", Text: strings.Repeat("x", 4000), Created: -5, Ref: strings.Repeat("r", 64)},
}

func TestBatchRoundTrip(t *testing.T) {
	got, err := DecodeBatch(AppendBatch(nil, sampleBatch))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sampleBatch) {
		t.Fatalf("decoded %+v\nwant %+v", got, sampleBatch)
	}
	if got, err := DecodeBatch(AppendBatch(nil, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty batch: %v %v", got, err)
	}
}

// A peer's bytes are input like any other: a cut or forged batch is an
// error, never a panic, a huge allocation or a message made of garbage.
func TestBadBatches(t *testing.T) {
	full := AppendBatch(nil, sampleBatch)
	for _, b := range [][]byte{nil, {}, {0}, {1}, {3}, {BatchVersion, 0xff}, {BatchVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		append([]byte{BatchVersion}, []byte(`{"m":[]}`)...)} {
		if msgs, err := DecodeBatch(b); err == nil {
			t.Errorf("DecodeBatch(%q) = %+v, want an error", b, msgs)
		}
	}
	// Every cut either fails or yields whole leading messages.
	for n := 1; n < len(full); n++ {
		msgs, err := DecodeBatch(full[:n])
		if err != nil {
			continue
		}
		if !reflect.DeepEqual(msgs, sampleBatch[:len(msgs)]) && len(msgs) > 0 {
			t.Fatalf("cut at %d decoded %+v", n, msgs)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(AppendBatch(nil, sampleBatch))
	f.Add([]byte{BatchVersion})
	f.Add([]byte{BatchVersion, 12, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := DecodeBatch(b)
		if err != nil {
			return
		}
		again, err := DecodeBatch(AppendBatch(nil, msgs))
		if err != nil || !reflect.DeepEqual(again, msgs) && len(msgs) > 0 {
			t.Fatalf("re-encoded batch decodes to %+v (%v), want %+v", again, err, msgs)
		}
	})
}

// A batch of more messages than any leader sends is refused before it is
// all decoded.
func TestBatchOfTooManyMessages(t *testing.T) {
	tiny := make([]Msg, MaxBatchMsgs+1)
	if _, err := DecodeBatch(AppendBatch(nil, tiny)); err == nil {
		t.Fatalf("a batch of %d messages was decoded", len(tiny))
	}
	if msgs, err := DecodeBatch(AppendBatch(nil, tiny[:MaxBatchMsgs])); err != nil || len(msgs) != MaxBatchMsgs {
		t.Fatalf("a batch of %d messages: %d, %v", MaxBatchMsgs, len(msgs), err)
	}
}
