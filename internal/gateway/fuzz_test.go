package gateway

import (
	"bytes"
	"mime"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"chatr/internal/proto"
)

// FuzzDecodePost feeds decodePost any content type and body: it never
// panics, refuses with a 4xx status and a protocol error, and what it
// accepts is a valid sender and text.
func FuzzDecodePost(f *testing.F) {
	for _, seed := range []struct{ ct, body string }{
		{"application/json", `{"sender":"alice","text":"hi"}`},
		{"application/json; charset=utf-8", `{"sender":"  bob ","text":"<b>x</b>"}`},
		{"application/json", `{"sender":"a","text":"` + strings.Repeat("x", 4097) + `"}`},
		{"application/json", `{"sender":"a","text":"\u0000"}`},
		{"application/json", `{"sender":"a","text":"\ud800"}`},
		{"application/json", "{\"sender\":\"a\",\"text\":\"\xff\"}"},
		{"application/json", `{"sender":"a","text":"b","x":1}`},
		{"application/json", `{"sender":"a","text":"b"} {}`},
		{"application/json", `[]`},
		{"application/json", `null`},
		{"application/json", ``},
		{"text/plain", `{"sender":"a","text":"b"}`},
		{"", ``},
		{"application/json; a=", `{}`},
		{"APPLICATION/JSON", `{"Sender":"a","TEXT":"b"}`},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		p, status, perr := decodePost(contentType, bytes.NewReader(body))
		if perr != nil {
			switch status {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			default:
				t.Fatalf("refused with status %d: %v", status, perr)
			}
			switch perr.Code {
			case proto.CodeBadRequest, proto.CodeTooLarge:
			default:
				t.Fatalf("refused with code %q", perr.Code)
			}
			if perr.Message == "" {
				t.Fatal("refusal without a message")
			}
			return
		}
		if status != 0 {
			t.Fatalf("accepted with status %d", status)
		}
		if mt, _, err := mime.ParseMediaType(contentType); err != nil || mt != "application/json" {
			t.Fatalf("accepted content type %q", contentType)
		}
		if len(body) > maxBodyBytes {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		// No sender is the token's name with auth on; postAs refuses it
		// otherwise (TestHTTPAPIWithAuth, TestPostRejects).
		if clean, nerr := proto.CleanName(p.Sender); p.Sender != "" && (nerr != nil || clean != p.Sender) {
			t.Fatalf("accepted sender %q (%v)", p.Sender, nerr)
		}
		if terr := proto.CheckText(p.Text); terr != nil || !utf8.ValidString(p.Text) {
			t.Fatalf("accepted text %q (%v)", p.Text, terr)
		}
	})
}
