package rest

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/gharart/coderun"
)

// A panic in a handler becomes a 500 problem that still carries the request id.
func TestPanicBecomesAProblem(t *testing.T) {
	boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	h := withRequestID(withRecover(slog.New(slog.NewTextHandler(io.Discard, nil)), boom))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/anything", nil))
	var p problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 500 || p.Code != "internal" || p.RequestID == "" || p.RequestID != rec.Header().Get("X-Request-Id") {
		t.Fatalf("got %d %+v", rec.Code, p)
	}
	if strings.Contains(rec.Body.String(), "boom") {
		t.Fatal("the panic value leaked to the caller")
	}
}

// The OpenAPI document describes exactly the routes the server serves, and
// names every schema it refers to.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	served := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}
	for _, r := range (&server{}).routes() {
		served[r.pattern] = true
	}
	var missing, extra []string
	for r := range served {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for r := range documented {
		if !served[r] {
			extra = append(extra, r)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing)+len(extra) > 0 {
		t.Fatalf("undocumented routes %v; documented but not served %v", missing, extra)
	}
	for _, ref := range strings.Split(string(openAPI), `"$ref": "#/components/schemas/`)[1:] {
		name := ref[:strings.IndexByte(ref, '"')]
		if _, ok := doc.Components.Schemas[name]; !ok {
			t.Errorf("$ref to missing schema %s", name)
		}
	}
}

// The objects the routes return have exactly the properties the document
// gives their schemas.
func TestOpenAPISchemasMatchObjects(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Required   []string                   `json:"required"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"Runtime":              coderun.Runtime{},
		"Limits":               coderun.Limits{},
		"Validation":           coderun.Validation{},
		"RuntimeList":          list[coderun.Runtime]{},
		"Problem":              withDetails(problem{Errors: []coderun.FieldError{{}}, RetryAfter: 1}, map[string]any{"activeRuns": 1, "limit": 1, "resetAt": "2026-12-04T00:00:00Z"}),
		"Run":                  coderun.Run{},
		"RunList":              runList{},
		"RunOutput":            fullOutput{},
		"OutputChunks":         chunkPage{},
		"SupportReportReceipt": reportReceipt{},
		"SupportReport":        reportView{},
		"SupportReportList":    list[reportView]{},
	} {
		b, _ := json.Marshal(v)
		var obj map[string]any
		_ = json.Unmarshal(b, &obj)
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("no schema %s", name)
			continue
		}
		var keys, props []string
		for k := range obj {
			keys = append(keys, k)
		}
		for k := range schema.Properties {
			props = append(props, k)
		}
		slices.Sort(keys)
		slices.Sort(props)
		if !slices.Equal(keys, props) {
			t.Errorf("%s: object has %v, schema has %v", name, keys, props)
		}
	}
}

// The full output is streamed, chunk by chunk, yet reads exactly as the
// fullOutput it stands for would encode: in utf8 with every character JSON
// escapes, and in base64 over chunks whose lengths do not divide by 3.
func TestFullOutputIsStreamedAsItWouldEncode(t *testing.T) {
	exit := 3
	for _, chunks := range [][]coderun.OutputChunk{
		nil,
		{{Seq: 1, Stream: coderun.Stdout, Data: []byte("hello\n")}},
		{
			{Seq: 1, Stream: coderun.Stdout, Data: []byte("quote \" backslash \\ <tag> & \x00\x01\x1f\t\n")},
			{Seq: 2, Stream: coderun.Stderr, Data: []byte("naïve — ☃ \u2028 \u2029 😀")},
			{Seq: 3, Stream: coderun.Stdout, Data: []byte("more\r\n")},
		},
		{
			{Seq: 1, Stream: coderun.Stdout, Data: []byte{0xff, 0x00, 'a'}},
			{Seq: 2, Stream: coderun.Stdout, Data: []byte("bc")},
			{Seq: 3, Stream: coderun.Stderr, Data: []byte("x")},
			{Seq: 4, Stream: coderun.Stdout, Data: []byte("defg")},
		},
	} {
		encoding := coderun.OutputEncoding(chunks)
		var stdout, stderr []byte
		for _, c := range chunks {
			if c.Stream == coderun.Stdout {
				stdout = append(stdout, c.Data...)
			} else {
				stderr = append(stderr, c.Data...)
			}
		}
		out := fullOutput{RunID: "run_1", Status: coderun.RunFailed, Complete: true, ExitCode: &exit, Encoding: encoding, Truncated: true, NextSeq: int64(len(chunks))}
		want := out
		want.Stdout, want.Stderr = coderun.EncodeText(stdout, encoding), coderun.EncodeText(stderr, encoding)
		rec := httptest.NewRecorder()
		writeJSON(rec, http.StatusOK, want)
		got := httptest.NewRecorder()
		writeFullOutput(got, out, chunks)
		if got.Body.String() != rec.Body.String() {
			t.Errorf("streamed:\n%s\nwant:\n%s", got.Body, rec.Body)
		}
		if got.Code != http.StatusOK || got.Header().Get("Content-Type") != "application/json" {
			t.Errorf("status %d, Content-Type %q", got.Code, got.Header().Get("Content-Type"))
		}
	}
}
