package resolvers

import (
	"github.com/gharart/coderun"
	"github.com/gharart/coderun/graph"
	"github.com/gharart/coderun/service"
)

// The chunks one CodeRun.output page may hold (`first`): 1–100 as for every
// `first` (CONTRACT.md), 100 when omitted. Chunks are coalesced up to ~64 KiB,
// so a page is bounded in bytes too, and most runs' output fits in one page.
const (
	defaultOutputChunks = 100
	maxOutputChunks     = 100
)

// outputPageSize checks a CodeRun.output `first`.
func outputPageSize(first *int) (int, error) {
	if first == nil {
		return defaultOutputChunks, nil
	}
	if *first < 1 || *first > maxOutputChunks {
		var errs coderun.ValidationErrors
		errs.Add("first", "out_of_range", "first must be between 1 and %d", maxOutputChunks)
		return 0, errs.Err()
	}
	return *first, nil
}

// outputComplexity prices CodeRun.output at one per chunk it may return on
// top of its selection: the chunks come from one read, so what grows with
// `first` is the bytes sent, whichever of a chunk's fields are selected. A
// list of runs asking for each one's output multiplies this by its page size.
func outputComplexity(childComplexity int, first *int) int {
	n := defaultOutputChunks
	if first != nil {
		n = min(max(*first, 1), maxOutputChunks)
	}
	return 1 + childComplexity + n
}

// outputPage lays out a page of a run's output: its chunks, and the data of
// each stream joined, all in one encoding.
func outputPage(out service.RunOutput) *graph.CodeRunOutput {
	encoding := coderun.OutputEncoding(out.Chunks)
	page := &graph.CodeRunOutput{
		Encoding:  encoding,
		Truncated: out.Run.Output.Truncated,
		Complete:  out.Complete,
		Chunks:    make([]graph.OutputChunk, len(out.Chunks)),
		NextSeq:   int(out.LastSeq),
	}
	var stdout, stderr []byte
	for i, c := range out.Chunks {
		page.Chunks[i] = outputChunk(c, encoding)
		if c.Stream == coderun.Stdout {
			stdout = append(stdout, c.Data...)
		} else {
			stderr = append(stderr, c.Data...)
		}
	}
	page.Stdout, page.Stderr = coderun.EncodeText(stdout, encoding), coderun.EncodeText(stderr, encoding)
	return page
}

// outputChunk writes a chunk's data in encoding: the page's, or (in a
// subscription, where each chunk travels alone) its own.
func outputChunk(c coderun.OutputChunk, encoding string) graph.OutputChunk {
	return graph.OutputChunk{Seq: int(c.Seq), Stream: c.Stream, Data: coderun.EncodeText(c.Data, encoding), Encoding: encoding, At: c.At}
}
