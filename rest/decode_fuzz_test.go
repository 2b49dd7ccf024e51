package rest

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gharart/coderun"
)

// FuzzDecodeJSON feeds arbitrary bodies to decodeJSON: it either decodes them
// or refuses them with a public error the caller caused, never a 5xx.
func FuzzDecodeJSON(f *testing.F) {
	for _, body := range []string{
		`{"image": "x", "digest": "sha256:00", "command": ["sh"], "limits": {"timeoutSeconds": 5}}`,
		`{"image": 1}`, `{"unknown": true}`, `{} {}`, `{}x`, `[]`, `null`, ``, `{"image": "x"`,
		`{"limits": {"memoryMiB": 1e400}}`, "\xff",
	} {
		f.Add([]byte(body))
	}
	const limit = 1 << 10
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPut, "/", bytes.NewReader(body))
		req.Body = http.MaxBytesReader(rec, req.Body, limit)
		var in coderun.RuntimeInput
		err := decodeJSON(req, &in)
		if err == nil {
			if len(body) > limit {
				t.Fatalf("decoded a body of %d bytes over the limit of %d", len(body), limit)
			}
			return
		}
		e := coderun.AsError(err)
		if e == nil || !coderun.IsPublicCode(e.Code) || coderun.ErrorStatus(e.Code) >= 500 {
			t.Fatalf("%q: error %v is not a public 4xx error", body, err)
		}
	})
}
