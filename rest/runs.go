package rest

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gharart/coderun"
)

func (s *server) submitRun(w http.ResponseWriter, r *http.Request) {
	var in coderun.RunInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, r, err)
		return
	}
	run, replayed, err := s.svc.SubmitRun(r.Context(), r.PathValue("handle"), in, idempotencyKey(r))
	if err != nil {
		writeError(w, r, err)
		return
	}
	markReplayed(w, replayed)
	w.Header().Set("Location", "/v2/handles/"+run.Handle+"/code-runs/"+run.ID)
	writeJSON(w, http.StatusAccepted, run)
}

func (s *server) getRun(w http.ResponseWriter, r *http.Request) {
	run, err := s.svc.Run(r.Context(), r.PathValue("handle"), r.PathValue("runId"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// runList is the answer of GET code-runs.
type runList struct {
	list[coderun.Run]
	ActiveRuns     int `json:"activeRuns"`
	ActiveRunLimit int `json:"activeRunLimit"`
}

func (s *server) listRuns(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	statuses, err := queryStatuses(r.URL.Query().Get("status"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	l, err := s.svc.ListRuns(r.Context(), r.PathValue("handle"), statuses, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, runList{list: newList(l.Page), ActiveRuns: l.ActiveRuns, ActiveRunLimit: l.ActiveRunLimit})
}

// queryStatuses reads ?status=: "active", or statuses separated by commas.
func queryStatuses(v string) ([]coderun.RunStatus, error) {
	if v == "" {
		return nil, nil
	}
	var out []coderun.RunStatus
	for _, s := range strings.Split(v, ",") {
		if s == "active" {
			out = append(out, coderun.ActiveRunStatuses...)
			continue
		}
		st := coderun.RunStatus(s)
		if !st.Valid() {
			var errs coderun.ValidationErrors
			errs.Add("status", "invalid", "status must be active or a run status (queued, starting, running, succeeded, failed, timed_out, cancelled, errored), separated by commas")
			return nil, errs.Err()
		}
		out = append(out, st)
	}
	return out, nil
}

// fullOutput is the answer of GET …/output without afterSeq.
type fullOutput struct {
	RunID     string            `json:"runId"`
	Status    coderun.RunStatus `json:"status"`
	Complete  bool              `json:"complete"`
	ExitCode  *int              `json:"exitCode"`
	Stdout    string            `json:"stdout"`
	Stderr    string            `json:"stderr"`
	Encoding  string            `json:"encoding"`
	Truncated bool              `json:"truncated"`
	NextSeq   int64             `json:"nextSeq"`
}

// chunkPage is the answer of GET …/output?afterSeq=N.
type chunkPage struct {
	Chunks   []chunkJSON `json:"chunks"`
	Encoding string      `json:"encoding"`
	NextSeq  int64       `json:"nextSeq"`
	Complete bool        `json:"complete"`
}

type chunkJSON struct {
	Seq    int64          `json:"seq"`
	Stream coderun.Stream `json:"stream"`
	Data   string         `json:"data"`
	At     time.Time      `json:"at"`
}

// maxChunksPerPage bounds one page of chunks.
const maxChunksPerPage = 1000

func (s *server) runOutput(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var afterSeq int64
	paged := q.Has("afterSeq")
	if paged {
		n, err := strconv.ParseInt(q.Get("afterSeq"), 10, 64)
		if err != nil || n < 0 {
			var errs coderun.ValidationErrors
			errs.Add("afterSeq", "invalid", "afterSeq must be a whole number, 0 or more")
			writeError(w, r, errs.Err())
			return
		}
		afterSeq = n
	}
	limit := 0
	if paged {
		limit = maxChunksPerPage
		if q.Has("limit") {
			n, err := strconv.Atoi(q.Get("limit"))
			if err != nil || n < 1 || n > maxChunksPerPage {
				var errs coderun.ValidationErrors
				errs.Add("limit", "out_of_range", "limit must be between 1 and %d", maxChunksPerPage)
				writeError(w, r, errs.Err())
				return
			}
			limit = n
		}
	}
	out, err := s.svc.Output(r.Context(), r.PathValue("handle"), r.PathValue("runId"), afterSeq, limit)
	if err != nil {
		writeError(w, r, err)
		return
	}
	encoding := coderun.OutputEncoding(out.Chunks)
	encode := func(b []byte) string { return coderun.EncodeText(b, encoding) }
	if paged {
		page := chunkPage{Chunks: make([]chunkJSON, len(out.Chunks)), Encoding: encoding, NextSeq: out.LastSeq, Complete: out.Complete}
		for i, c := range out.Chunks {
			page.Chunks[i] = chunkJSON{Seq: c.Seq, Stream: c.Stream, Data: encode(c.Data), At: c.At}
		}
		writeJSON(w, http.StatusOK, page)
		return
	}
	writeFullOutput(w, fullOutput{
		RunID: out.Run.ID, Status: out.Run.Status, Complete: out.Complete, ExitCode: out.Run.ExitCode,
		Encoding: encoding, Truncated: out.Run.Output.Truncated, NextSeq: out.LastSeq,
	}, out.Chunks)
}

func (s *server) cancelRun(w http.ResponseWriter, r *http.Request) {
	run, replayed, err := s.svc.CancelRun(r.Context(), r.PathValue("handle"), r.PathValue("runId"), idempotencyKey(r))
	if err != nil {
		writeError(w, r, err)
		return
	}
	markReplayed(w, replayed)
	writeJSON(w, http.StatusAccepted, run)
}
