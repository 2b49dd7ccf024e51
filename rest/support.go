package rest

import (
	"net/http"
	"time"

	"github.com/gharart/coderun"
)

// reportReceipt is the answer to a filed report (CONTRACT.md).
type reportReceipt struct {
	ReportID  string               `json:"reportId"`
	Status    coderun.ReportStatus `json:"status"`
	CreatedAt time.Time            `json:"createdAt"`
}

// reportView is a report as its reporter lists it: the artifact by its size,
// which keeps a page of reports small.
type reportView struct {
	reportReceipt
	Summary            string  `json:"summary"`
	Details            string  `json:"details"`
	Handle             *string `json:"handle"`
	SessionID          *string `json:"sessionId"`
	RequestID          *string `json:"requestId"`
	ReproArtifactBytes int     `json:"reproArtifactBytes"`
}

func (s *server) reportSupportIssue(w http.ResponseWriter, r *http.Request) {
	var in coderun.SupportReportInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, r, err)
		return
	}
	report, replayed, err := s.svc.ReportSupportIssue(r.Context(), in, idempotencyKey(r))
	if err != nil {
		writeError(w, r, err)
		return
	}
	markReplayed(w, replayed)
	writeJSON(w, http.StatusCreated, reportReceipt{ReportID: report.ID, Status: report.Status, CreatedAt: report.CreatedAt})
}

func (s *server) listSupportReports(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	page, err := s.svc.ListSupportReports(r.Context(), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		writeError(w, r, err)
		return
	}
	views := make([]reportView, len(page.Items))
	for i, rp := range page.Items {
		views[i] = reportView{
			reportReceipt: reportReceipt{ReportID: rp.ID, Status: rp.Status, CreatedAt: rp.CreatedAt},
			Summary:       rp.Summary, Details: rp.Details, Handle: rp.Handle, SessionID: rp.SessionID, RequestID: rp.RequestID,
			ReproArtifactBytes: rp.ReproArtifactBytes,
		}
	}
	writeJSON(w, http.StatusOK, newList(coderun.Page[reportView]{Items: views, NextCursor: page.NextCursor}))
}
