package service

import (
	"context"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// MaxDailyReports bounds the reports one user files in a UTC day, so that no
// one fills the store with reports, nor spends a handle's daily writes (a
// report naming a handle is one of them) by filing reports as a viewer.
const MaxDailyReports = 50

// requestIDPattern is the form of the ids X-Request-Id carries.
var requestIDPattern = regexp.MustCompile(`^req_[0-9A-HJKMNP-TV-Z]{26}$`)

// ReportSupportIssue files a support report from the caller. Any signed-in
// caller with the support:write scope may file one. A handle it names must be
// one the caller is a member of (else handle_not_found), and the report counts
// as one of that handle's daily writes; a request it cites must be one the
// caller made (else request_not_found). Neither is ever attached unchecked.
// replayed reports an answer repeated for idem rather than a new report.
func (s *Service) ReportSupportIssue(ctx context.Context, in coderun.SupportReportInput, idem IdempotencyKey) (r coderun.SupportReport, replayed bool, err error) {
	if err := validateReport(in); err != nil {
		return r, false, err
	}
	w := write{scope: coderun.ScopeSupportWrite, role: coderun.RoleViewer, key: idem, op: "ReportSupportIssue", input: in}
	if in.Handle != nil {
		w.handle = *in.Handle
	}
	if in.RequestID != nil {
		// A request answered a moment ago may still wait to be written.
		s.requests.flushFor(ctx, *in.RequestID)
	}
	r, replayed, err = s.fileReport(ctx, w, in)
	if in.RequestID != nil && coderun.ErrorCode(err) == coderun.ERequestNotFound && recentRequest(*in.RequestID, time.Now()) {
		// Another process answered it a moment ago: its batch of requests
		// is written within requestFlushDelay.
		select {
		case <-time.After(requestFlushDelay + 50*time.Millisecond):
			r, replayed, err = s.fileReport(ctx, w, in)
		case <-ctx.Done():
		}
	}
	return r, replayed, err
}

// fileReport stores the report w describes.
func (s *Service) fileReport(ctx context.Context, w write, in coderun.SupportReportInput) (r coderun.SupportReport, replayed bool, err error) {
	replayed, _, err = s.commit(ctx, w, &r, func(tx *store.Tx) (outcome, error) {
		p := coderun.PrincipalFromContext(ctx)
		if in.RequestID != nil {
			if err := mayCite(ctx, tx, p, *in.RequestID); err != nil {
				return 0, err
			}
		}
		now := s.now()
		if err := s.checkDailyReports(ctx, tx, p, now); err != nil {
			return 0, err
		}
		r = coderun.SupportReport{
			ID: newID("rpt_"), Status: coderun.ReportReceived, CreatedAt: now, UserID: p.UserID,
			Summary: in.Summary, Details: in.Details, Handle: in.Handle, SessionID: in.SessionID,
			RequestID: in.RequestID, ReproArtifact: in.ReproArtifact, ReproArtifactBytes: len(stringOr(in.ReproArtifact)),
		}
		if err := tx.CreateSupportReport(ctx, r); err != nil {
			return 0, err
		}
		s.log.InfoContext(ctx, "support report filed", "report_id", r.ID, "user", p.UserID,
			"handle", w.handle, "cites_request", stringOr(in.RequestID))
		return outcomeCreated, nil
	})
	return r, replayed, err
}

// mayCite checks that p may cite the request id: p made it, and a token bound
// to a handle cites only requests made to that handle or to none.
func mayCite(ctx context.Context, tx *store.Tx, p *coderun.Principal, id string) error {
	rec, err := tx.Request(ctx, id)
	if err != nil {
		return err
	}
	if rec.UserID != p.UserID || (p.Handle != "" && rec.Handle != "" && rec.Handle != p.Handle) {
		return coderun.Errorf(coderun.ERequestNotFound, "request %q not found", id)
	}
	return nil
}

// checkDailyReports refuses a report past the caller's daily number of them.
// The caller's reports take turns on a lock, so that concurrent ones cannot
// overshoot.
func (s *Service) checkDailyReports(ctx context.Context, tx *store.Tx, p *coderun.Principal, now time.Time) error {
	if err := tx.LockName(ctx, "support-reports:"+p.UserID); err != nil {
		return err
	}
	day := now.UTC().Truncate(24 * time.Hour)
	n, err := tx.SupportReportsSince(ctx, p.UserID, day)
	if err != nil || n < MaxDailyReports {
		return err
	}
	reset := nextUTCMidnight(now)
	e := coderun.Errorf(coderun.EDailyWriteLimit, "you filed %d support reports today; the count resets at %s",
		MaxDailyReports, reset.Format(time.RFC3339))
	e.RetryAfter = reset.Sub(now)
	e.Details = map[string]any{"limit": MaxDailyReports, "resetAt": reset}
	e.Quota = &coderun.Quota{Policy: "daily-reports", Limit: MaxDailyReports, Window: 24 * time.Hour}
	return e
}

// validateReport checks a report's fields against CONTRACT.md's limits.
func validateReport(in coderun.SupportReportInput) error {
	var errs coderun.ValidationErrors
	switch n := utf8.RuneCountInString(in.Summary); {
	case strings.TrimSpace(in.Summary) == "":
		errs.Add("summary", "required", "summary is required")
	case n > coderun.MaxReportSummary:
		errs.Add("summary", "too_long", "summary is %d characters; at most %d are allowed", n, coderun.MaxReportSummary)
	case strings.IndexFunc(in.Summary, unicode.IsControl) >= 0:
		errs.Add("summary", "invalid", "summary must be one line without control characters")
	}
	switch n := utf8.RuneCountInString(in.Details); {
	case strings.TrimSpace(in.Details) == "":
		errs.Add("details", "required", "details are required")
	case n > coderun.MaxReportDetails:
		errs.Add("details", "too_long", "details are %d characters; at most %d are allowed", n, coderun.MaxReportDetails)
	}
	if in.Handle != nil && *in.Handle == "" {
		errs.Add("handle", "invalid", "handle must name a handle, or be left out")
	}
	if in.SessionID != nil {
		if n := len(*in.SessionID); n == 0 || n > coderun.MaxReportSessionID || strings.IndexFunc(*in.SessionID, notPrintable) >= 0 {
			errs.Add("sessionId", "invalid", "sessionId must be 1 to %d printable characters without spaces", coderun.MaxReportSessionID)
		}
	}
	if in.RequestID != nil && !requestIDPattern.MatchString(*in.RequestID) {
		errs.Add("requestId", "invalid", "requestId must be a request id as X-Request-Id gives it, e.g. req_01JD…")
	}
	if in.ReproArtifact != nil && len(*in.ReproArtifact) > coderun.MaxReportArtifact {
		errs.Add("reproArtifact", "too_long", "reproArtifact is %d bytes; at most %d are allowed", len(*in.ReproArtifact), coderun.MaxReportArtifact)
	}
	return errs.Err()
}

// ListSupportReports returns the caller's own support reports, newest first.
// Reports belong to their reporter: no one else lists them. A token bound to
// a handle lists only the reports naming that handle or none.
func (s *Service) ListSupportReports(ctx context.Context, cursor string, limit int) (coderun.Page[coderun.SupportReport], error) {
	var page coderun.Page[coderun.SupportReport]
	p, err := signedIn(ctx, coderun.ScopeSupportWrite)
	if err != nil {
		return page, err
	}
	limit, err = pageSize(limit)
	if err != nil {
		return page, err
	}
	before, err := decodeCursor(cursor)
	if err != nil {
		return page, err
	}
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		items, err := tx.ListSupportReports(ctx, p.UserID, p.Handle, before, limit+1)
		page = pageOf(items, limit, func(r coderun.SupportReport) string { return r.ID })
		return err
	})
	return page, err
}

func stringOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
