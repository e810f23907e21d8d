package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"chatr/internal/proto"
)

func frame(typ byte, p []byte) []byte { return append(AppendFrameHeader(nil, typ, len(p)), p...) }

func TestReadFrame(t *testing.T) {
	good := frame(FrameJSON, []byte(`{}`))
	for name, tc := range map[string]struct {
		in []byte
		ok bool
	}{
		"json":           {good, true},
		"batch":          {frame(FrameBatch, AppendBatch(nil, sampleBatch)), true},
		"empty":          {nil, false},
		"header only":    {good[:FrameHeaderSize], false},
		"cut short":      {good[:len(good)-1], false},
		"unknown type":   {frame(9, []byte("x")), false},
		"over the limit": {AppendFrameHeader(nil, FrameJSON, 1<<20+1), false},
	} {
		typ, p, err := ReadFrame(bufio.NewReader(bytes.NewReader(tc.in)), 1<<20)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %d %q %v, want ok=%v", name, typ, p, err, tc.ok)
		}
	}
}

func TestDecodeHello(t *testing.T) {
	good := Hello{Node: "0123456789ab", Cluster: "c", Proof: []byte{1, 2}, Since: proto.Vector{"abcdef012345": 3}, Skip: []string{"fedcba987654"}}
	b, _ := json.Marshal(good)
	if h, err := DecodeHello(FrameJSON, b); err != nil || h.Node != good.Node || h.Since["abcdef012345"] != 3 {
		t.Fatalf("good hello: %+v, %v", h, err)
	}
	for name, in := range map[string]string{
		"not json":      `{`,
		"bad node":      `{"node":"x"}`,
		"bad origin":    `{"node":"0123456789ab","since":{"zz":1}}`,
		"bad skip":      `{"node":"0123456789ab","skip":["ZZZZZZZZZZZZ"]}`,
		"negative seq":  `{"node":"0123456789ab","since":{"abcdef012345":-1}}`,
		"proof not b64": `{"node":"0123456789ab","proof":"!!"}`,
	} {
		if _, err := DecodeHello(FrameJSON, []byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := DecodeHello(FrameBatch, b); err == nil {
		t.Error("a hello in a batch frame accepted")
	}
}

// FuzzLinkHandshake feeds the leader's first read of a link (what a
// stranger or a broken member sends once TLS is up): frames, then the
// hello. Nothing may panic; a hello accepted names only valid ids.
func FuzzLinkHandshake(f *testing.F) {
	b, _ := json.Marshal(Hello{Node: "0123456789ab", Cluster: "c", Since: proto.Vector{"abcdef012345": 3}})
	f.Add(frame(FrameJSON, b))
	f.Add(frame(FrameBatch, AppendBatch(nil, sampleBatch)))
	f.Add([]byte{FrameJSON, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		typ, p, err := ReadFrame(bufio.NewReader(bytes.NewReader(in)), 64<<10)
		if err != nil {
			return
		}
		h, err := DecodeHello(typ, p)
		if err != nil {
			return
		}
		if !proto.ValidNodeID(h.Node) {
			t.Fatalf("hello accepted with node %q", h.Node)
		}
		for o := range h.Since {
			if !proto.ValidNodeID(o) {
				t.Fatalf("hello accepted with origin %q", o)
			}
		}
	})
}
