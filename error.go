package coderun

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error codes: stable snake_case strings that clients rely on (CONTRACT.md). The
// transports map each to an HTTP status and a GraphQL extensions.code from one
// table; a code not listed there is an internal error and its message is hidden.
const (
	EInvalidRequest      = "invalid_request"
	EValidationFailed    = "validation_failed"
	EPayloadTooLarge     = "payload_too_large"
	EUnauthenticated     = "unauthenticated"
	EInsufficientScope   = "insufficient_scope"
	EForbidden           = "forbidden"
	ENotFound            = "not_found"
	EMethodNotAllowed    = "method_not_allowed"
	EHandleNotFound      = "handle_not_found"
	ERuntimeNotFound     = "runtime_not_found"
	ERunNotFound         = "run_not_found"
	ERequestNotFound     = "request_not_found"
	ETokenNotFound       = "token_not_found"
	EConflict            = "conflict"
	ERuntimeNotValidated = "runtime_not_validated"
	ERunAlreadyFinished  = "run_already_finished"
	EOutputUnavailable   = "output_unavailable"
	// ESubscriberTooSlow ends a subscription whose reader fell too far
	// behind; the subscriber resumes from the last seq it received. No route
	// answers with it; it is listed so that GraphQL shows it.
	ESubscriberTooSlow    = "subscriber_too_slow"
	EIdempotencyKeyReused = "idempotency_key_reused"
	EIdempotencyKeyInUse  = "idempotency_key_in_use"
	ERateLimited          = "rate_limited"
	EDailyWriteLimit      = "daily_write_limit_reached"
	EActiveRunLimit       = "active_run_limit_reached"
	EUnavailable          = "service_unavailable"
	EInternal             = "internal"
)

// Error is the one error type of the application. Code is one of the E* codes;
// Message is safe to show to the caller.
type Error struct {
	Code    string
	Message string
	// Fields lists per-field failures of a validation_failed error.
	Fields []FieldError
	// RetryAfter, when set, tells the caller when trying again may succeed.
	RetryAfter time.Duration
	// Details are extra members shown to the caller (e.g. activeRuns, limit).
	Details map[string]any
	// Quota, on an error that a limit other than a route's throttle gave
	// (the daily writes, say), describes that limit, so that the rate-limit
	// headers of the answer speak of it.
	Quota *Quota
}

// Quota is a limit a request can run into.
type Quota struct {
	// Policy names it, e.g. "daily-writes".
	Policy string
	// Limit is how many are allowed: per Window, or at once when Window is 0.
	Limit  int
	Window time.Duration
}

// FieldError is one invalid field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err: the Code of an *Error in its chain,
// EInternal for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the message of an *Error in err's chain, or a generic
// message for any other error (whose text may hold internals and is never shown).
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// AsError returns the *Error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// ValidationErrors collects field failures; Err returns nil when there are none.
type ValidationErrors []FieldError

// Add records a failure of field.
func (v *ValidationErrors) Add(field, code, format string, args ...any) {
	*v = append(*v, FieldError{Field: field, Code: code, Message: fmt.Sprintf(format, args...)})
}

// Err returns a validation_failed *Error listing the failures, or nil.
func (v ValidationErrors) Err() error {
	if len(v) == 0 {
		return nil
	}
	msg := v[0].Message
	if len(v) > 1 {
		msg = fmt.Sprintf("%s (and %d more)", msg, len(v)-1)
	}
	return &Error{Code: EValidationFailed, Message: msg, Fields: v}
}

// errorStatus is the one table from error code to HTTP status. REST answers with
// it; the GraphQL error presenter exposes exactly the codes it lists and hides
// every other error as internal.
var errorStatus = map[string]int{
	EInvalidRequest:       http.StatusBadRequest,
	EValidationFailed:     http.StatusBadRequest,
	EPayloadTooLarge:      http.StatusRequestEntityTooLarge,
	EUnauthenticated:      http.StatusUnauthorized,
	EInsufficientScope:    http.StatusForbidden,
	EForbidden:            http.StatusForbidden,
	ENotFound:             http.StatusNotFound,
	EMethodNotAllowed:     http.StatusMethodNotAllowed,
	EHandleNotFound:       http.StatusNotFound,
	ERuntimeNotFound:      http.StatusNotFound,
	ERunNotFound:          http.StatusNotFound,
	ERequestNotFound:      http.StatusNotFound,
	ETokenNotFound:        http.StatusNotFound,
	EConflict:             http.StatusConflict,
	ERuntimeNotValidated:  http.StatusConflict,
	ERunAlreadyFinished:   http.StatusConflict,
	EOutputUnavailable:    http.StatusConflict,
	ESubscriberTooSlow:    http.StatusConflict,
	EIdempotencyKeyInUse:  http.StatusConflict,
	EIdempotencyKeyReused: http.StatusUnprocessableEntity,
	ERateLimited:          http.StatusTooManyRequests,
	EDailyWriteLimit:      http.StatusTooManyRequests,
	EActiveRunLimit:       http.StatusTooManyRequests,
	EUnavailable:          http.StatusServiceUnavailable,
	EInternal:             http.StatusInternalServerError,
}

// ErrorStatus returns the HTTP status for an error code; unknown codes are 500.
func ErrorStatus(code string) int {
	if s, ok := errorStatus[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// IsPublicCode reports whether code is one the API shows to callers.
func IsPublicCode(code string) bool {
	_, ok := errorStatus[code]
	return ok && code != EInternal
}
