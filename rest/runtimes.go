package rest

import (
	"net/http"
	"strconv"

	"github.com/gharart/coderun"
)

func (s *server) routes() []route {
	return []route{
		{pattern: "GET /v2/openapi.json", handler: serveOpenAPI, public: true},
		{pattern: "GET /v2/handles/{handle}/code-runtimes", handler: s.listRuntimes},
		{pattern: "GET /v2/handles/{handle}/code-runtimes/{runtimeKey}", handler: s.getRuntime},
		{pattern: "PUT /v2/handles/{handle}/code-runtimes/{runtimeKey}", handler: s.putRuntime},
		{pattern: "POST /v2/handles/{handle}/code-runtimes/{runtimeKey}/validate-image", handler: s.validateImage},
		{pattern: "POST /v2/handles/{handle}/code-runs", handler: s.submitRun},
		{pattern: "GET /v2/handles/{handle}/code-runs", handler: s.listRuns},
		{pattern: "GET /v2/handles/{handle}/code-runs/{runId}", handler: s.getRun},
		{pattern: "GET /v2/handles/{handle}/code-runs/{runId}/output", handler: s.runOutput},
		{pattern: "POST /v2/handles/{handle}/code-runs/{runId}/cancel", handler: s.cancelRun},
		{pattern: "POST /v2/support/report", handler: s.reportSupportIssue},
		{pattern: "GET /v2/support/reports", handler: s.listSupportReports},
	}
}

// list is the shape of every REST list.
type list[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"nextCursor"`
}

func newList[T any](p coderun.Page[T]) list[T] {
	l := list[T]{Items: p.Items}
	if l.Items == nil {
		l.Items = []T{}
	}
	if p.NextCursor != "" {
		l.NextCursor = &p.NextCursor
	}
	return l
}

func (s *server) listRuntimes(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	page, err := s.svc.ListRuntimes(r.Context(), r.PathValue("handle"), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newList(page))
}

func (s *server) getRuntime(w http.ResponseWriter, r *http.Request) {
	rt, err := s.svc.Runtime(r.Context(), r.PathValue("handle"), r.PathValue("runtimeKey"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rt)
}

func (s *server) putRuntime(w http.ResponseWriter, r *http.Request) {
	var in coderun.RuntimeInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, r, err)
		return
	}
	rt, created, replayed, err := s.svc.PutRuntime(r.Context(), r.PathValue("handle"), r.PathValue("runtimeKey"), in, idempotencyKey(r))
	if err != nil {
		writeError(w, r, err)
		return
	}
	markReplayed(w, replayed)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", r.URL.Path)
	}
	writeJSON(w, status, rt)
}

func (s *server) validateImage(w http.ResponseWriter, r *http.Request) {
	rt, replayed, err := s.svc.ValidateRuntimeImage(r.Context(), r.PathValue("handle"), r.PathValue("runtimeKey"), idempotencyKey(r))
	if err != nil {
		writeError(w, r, err)
		return
	}
	markReplayed(w, replayed)
	writeJSON(w, http.StatusOK, rt)
}

// queryLimit reads ?limit=; absent means the default page size (0).
func queryLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		var errs coderun.ValidationErrors
		errs.Add("limit", "out_of_range", "limit must be a whole number between 1 and 100")
		return 0, errs.Err()
	}
	return n, nil
}
