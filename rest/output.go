package rest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"

	"github.com/gharart/coderun"
)

// writeFullOutput answers GET …/output without afterSeq: the fullOutput of
// out, in encoding, written as it is encoded. A run's output may be tens of
// MiB, and escaping can make it several times that as JSON; the stdout and
// stderr strings are streamed chunk by chunk instead of joined and encoded
// into memory first. The bytes are those json.Marshal gives fullOutput.
func writeFullOutput(w http.ResponseWriter, out fullOutput, chunks []coderun.OutputChunk) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	field := func(sep, name string, v any) {
		b, _ := json.Marshal(v) // of strings, bools, numbers: cannot fail
		bw.WriteString(sep + `"` + name + `":`)
		bw.Write(b)
	}
	field("{", "runId", out.RunID)
	field(",", "status", out.Status)
	field(",", "complete", out.Complete)
	field(",", "exitCode", out.ExitCode)
	for _, s := range []struct {
		name   string
		stream coderun.Stream
	}{{"stdout", coderun.Stdout}, {"stderr", coderun.Stderr}} {
		bw.WriteString(`,"` + s.name + `":"`)
		writeText(bw, chunks, s.stream, out.Encoding)
		bw.WriteString(`"`)
	}
	field(",", "encoding", out.Encoding)
	field(",", "truncated", out.Truncated)
	field(",", "nextSeq", out.NextSeq)
	bw.WriteString("}\n")
	_ = bw.Flush() // a client that hung up is no error of ours
}

// writeText writes the data of stream's chunks, joined, as the inside of a
// JSON string in encoding. In utf8 each chunk is valid UTF-8 on its own (see
// coderun.OutputEncoding), so escaping chunk by chunk escapes the whole.
func writeText(w io.Writer, chunks []coderun.OutputChunk, stream coderun.Stream, encoding string) {
	if encoding == coderun.EncodingBase64 {
		enc := base64.NewEncoder(base64.StdEncoding, w) // its alphabet needs no escaping
		for _, c := range chunks {
			if c.Stream == stream {
				enc.Write(c.Data)
			}
		}
		enc.Close()
		return
	}
	for _, c := range chunks {
		if c.Stream == stream {
			b, _ := json.Marshal(string(c.Data))
			w.Write(b[1 : len(b)-1])
		}
	}
}
