package bench

import (
	"bytes"
	"strconv"

	"chatr/internal/client"
)

// A bench message text is "b <sender> <seq> <unix nanos> " padded with 'x'
// to the wanted size: the receiver learns who sent it, which one it is and
// when it was sent without any state shared with the sender.

// appendText appends the text of message seq of sender, sent at nanos,
// padded to size bytes (it is longer when size is below the header).
func appendText(b []byte, sender int, seq uint64, nanos int64, size int) []byte {
	start := len(b)
	b = append(b, "b "...)
	b = strconv.AppendInt(b, int64(sender), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, nanos, 10)
	b = append(b, ' ')
	for len(b)-start < size {
		b = append(b, 'x')
	}
	return b
}

// parseText reads back what appendText wrote.
func parseText(t []byte) (sender int, seq uint64, nanos int64, ok bool) {
	if !bytes.HasPrefix(t, []byte("b ")) {
		return 0, 0, 0, false
	}
	t = t[2:]
	var n [3]uint64
	for i := range n {
		j := 0
		for j < len(t) && t[j] >= '0' && t[j] <= '9' {
			n[i] = n[i]*10 + uint64(t[j]-'0')
			j++
		}
		if j == 0 || j > 19 || j == len(t) || t[j] != ' ' {
			return 0, 0, 0, false
		}
		t = t[j+1:]
	}
	if n[0] > 1<<30 || n[2] > 1<<63-1 {
		return 0, 0, 0, false
	}
	return int(n[0]), n[1], int64(n[2]), true
}

// stringField returns the value of the JSON string field key of a flat
// JSON object as encoding/json writes it, without unescaping. ok is false
// when the field is missing or holds an escape; the caller then decodes the
// frame in full. A pattern `"key":"` cannot occur inside a JSON string,
// where every quote is escaped, so the first match is the field.
func stringField(data []byte, key string) (value []byte, ok bool) {
	var pat [24]byte
	p := append(pat[:0], '"')
	p = append(p, key...)
	p = append(p, '"', ':', '"')
	i := bytes.Index(data, p)
	if i < 0 {
		return nil, false
	}
	v := data[i+len(p):]
	for j := 0; j < len(v); j++ {
		switch v[j] {
		case '"':
			return v[:j], true
		case '\\':
			return nil, false
		}
	}
	return nil, false
}

// frame is what bench needs of a server frame.
type frame struct {
	typ     string
	text    []byte // message
	ref     []byte // ack, error
	code    string // error
	message string // error
}

// scan reads the type of a frame and the fields bench needs of it, by
// scanning for them where it can and by decoding the frame where it cannot.
// The byte slices point into data.
func scan(data []byte) frame {
	if t, ok := stringField(data, "type"); ok {
		switch string(t) {
		case client.TypeMessage:
			if text, ok := stringField(data, "text"); ok {
				return frame{typ: client.TypeMessage, text: text}
			}
		case client.TypeAck:
			if ref, ok := stringField(data, "ref"); ok {
				return frame{typ: client.TypeAck, ref: ref}
			}
		case client.TypePresence:
			return frame{typ: client.TypePresence}
		case client.TypeSynced:
			return frame{typ: client.TypeSynced}
		case client.TypeJoined:
			return frame{typ: client.TypeJoined}
		case client.TypePong:
			return frame{typ: client.TypePong}
		}
	}
	f, err := client.Decode(data)
	if err != nil {
		return frame{typ: "undecodable"}
	}
	return frame{typ: f.Type, text: []byte(f.Text), ref: []byte(f.Ref), code: f.Code, message: f.Message}
}
