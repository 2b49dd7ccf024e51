package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gharart/coderun"
)

// RecordRequests keeps recs, the requests some callers made (a batch: the
// edge hands them over in bulk, not one write per request). A request kept
// already is left as it is.
func (tx *Tx) RecordRequests(ctx context.Context, recs []coderun.RequestRecord) error {
	const q = `INSERT INTO requests (id, user_id, token_id, handle, method, route, status, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	for _, r := range recs {
		if _, err := tx.exec(ctx, q, r.ID, r.UserID, r.TokenID, r.Handle, r.Method, r.Route, r.Status, someTime(tx.orNow(r.At))); err != nil {
			return fmt.Errorf("record request %s: %w", r.ID, err)
		}
	}
	return nil
}

// ForgetRequests drops the requests made before before; it returns how many.
func (tx *Tx) ForgetRequests(ctx context.Context, before time.Time) (int64, error) {
	res, err := tx.exec(ctx, `DELETE FROM requests WHERE at < ?`, someTime(before))
	if err != nil {
		return 0, fmt.Errorf("forget requests: %w", err)
	}
	return res.RowsAffected()
}

// Request returns the request id, or an ERequestNotFound.
func (tx *Tx) Request(ctx context.Context, id string) (coderun.RequestRecord, error) {
	const q = `SELECT id, user_id, token_id, handle, method, route, status, at FROM requests WHERE id = ?`
	var r coderun.RequestRecord
	var at dbTime
	err := tx.queryRow(ctx, q, id).Scan(&r.ID, &r.UserID, &r.TokenID, &r.Handle, &r.Method, &r.Route, &r.Status, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return coderun.RequestRecord{}, coderun.Errorf(coderun.ERequestNotFound, "request %q not found", id)
	case err != nil:
		return coderun.RequestRecord{}, fmt.Errorf("get request %q: %w", id, err)
	}
	r.At = at.Time
	return r, nil
}

// CreateSupportReport stores r; its CreatedAt defaults to now.
func (tx *Tx) CreateSupportReport(ctx context.Context, r coderun.SupportReport) error {
	const q = `INSERT INTO support_reports (id, user_id, handle, session_id, request_id, summary, details, repro_artifact, status, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	_, err := tx.exec(ctx, q, r.ID, r.UserID, r.Handle, r.SessionID, r.RequestID, r.Summary, r.Details, r.ReproArtifact,
		string(r.Status), someTime(tx.orNow(r.CreatedAt)))
	if err != nil {
		return fmt.Errorf("create support report %s: %w", r.ID, err)
	}
	return nil
}

// SupportReportsSince counts the reports userID filed at or after since.
func (tx *Tx) SupportReportsSince(ctx context.Context, userID string, since time.Time) (int, error) {
	const q = `SELECT COUNT(*) FROM support_reports WHERE user_id = ? AND created_at >= ?`
	var n int
	if err := tx.get(ctx, &n, q, userID, someTime(since)); err != nil {
		return 0, fmt.Errorf("count support reports of %q: %w", userID, err)
	}
	return n, nil
}

// ListSupportReports returns up to limit of userID's reports, newest first,
// each with the size of its artifact but not the artifact itself,
// starting after the report beforeID ("" for the newest). A handle other than
// "" leaves out the reports that name another handle.
func (tx *Tx) ListSupportReports(ctx context.Context, userID, handle, beforeID string, limit int) ([]coderun.SupportReport, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list support reports of %q: limit %d is not positive", userID, limit)
	}
	q := `SELECT id, user_id, handle, session_id, request_id, summary, details,
		COALESCE(` + fmt.Sprintf(tx.db.d.byteLength, "repro_artifact") + `, 0), status, created_at
		FROM support_reports WHERE user_id = ? AND (? = '' OR handle IS NULL OR handle = ?) AND (? = '' OR id < ?)
		ORDER BY id DESC LIMIT ?`
	rows, err := tx.tx.QueryxContext(ctx, tx.db.d.rebind(q), userID, handle, handle, beforeID, beforeID, limit)
	if err != nil {
		return nil, fmt.Errorf("list support reports of %q: %w", userID, err)
	}
	defer rows.Close()
	var reports []coderun.SupportReport
	for rows.Next() {
		var r coderun.SupportReport
		var handle, session, request sql.NullString
		var status string
		var created dbTime
		if err := rows.Scan(&r.ID, &r.UserID, &handle, &session, &request, &r.Summary, &r.Details, &r.ReproArtifactBytes, &status, &created); err != nil {
			return nil, fmt.Errorf("list support reports of %q: %w", userID, err)
		}
		r.Handle, r.SessionID, r.RequestID = nullable(handle), nullable(session), nullable(request)
		r.Status, r.CreatedAt = coderun.ReportStatus(status), created.Time
		reports = append(reports, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list support reports of %q: %w", userID, err)
	}
	return reports, nil
}

func nullable(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}
