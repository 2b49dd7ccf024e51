package coderun

import "time"

// Limits on a support report (CONTRACT.md "POST /v2/support/report"), in
// characters for the texts and bytes for the artifact.
const (
	MaxReportSummary  = 200
	MaxReportDetails  = 10_000
	MaxReportArtifact = 64 << 10
	// MaxReportSessionID bounds the client's session id, which the contract
	// leaves open.
	MaxReportSessionID = 200
)

// ReportStatus is where a support report stands.
type ReportStatus string

// ReportReceived is a report's status once it is stored.
const ReportReceived ReportStatus = "received"

// SupportReportInput is what a user files: a summary and details, and
// optionally the handle, client session and request they are about, and an
// artifact (a script, a log) that reproduces the problem.
type SupportReportInput struct {
	Summary       string  `json:"summary"`
	Details       string  `json:"details"`
	Handle        *string `json:"handle,omitempty"`
	SessionID     *string `json:"sessionId,omitempty"`
	RequestID     *string `json:"requestId,omitempty"`
	ReproArtifact *string `json:"reproArtifact,omitempty"`
}

// SupportReport is a filed report. A report is its reporter's: only they list
// it. Handle and RequestID, when set, were checked to be the reporter's to
// cite when the report was filed.
type SupportReport struct {
	ID            string       `json:"reportId"`
	Status        ReportStatus `json:"status"`
	CreatedAt     time.Time    `json:"createdAt"`
	UserID        string       `json:"-"`
	Summary       string       `json:"summary"`
	Details       string       `json:"details"`
	Handle        *string      `json:"handle"`
	SessionID     *string      `json:"sessionId"`
	RequestID     *string      `json:"requestId"`
	ReproArtifact *string      `json:"reproArtifact"`
	// ReproArtifactBytes is the artifact's size; a list of reports gives it
	// without the artifact.
	ReproArtifactBytes int `json:"reproArtifactBytes"`
}

// RequestRecord is one request the service answered, with its caller: what
// lets a support report cite a request id, and support follow it.
type RequestRecord struct {
	ID      string
	UserID  string
	TokenID string
	// Handle is the handle the caller was authorized in ("" when none).
	Handle string
	Method string
	// Route is the route pattern, e.g. "POST /v2/handles/{handle}/code-runs".
	Route  string
	Status int
	At     time.Time
}
