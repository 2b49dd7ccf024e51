package coderun

import (
	"regexp"
	"strings"
	"time"
)

// RuntimeKeyPattern is the form of a runtime key.
var RuntimeKeyPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// HandlePattern is the form of a handle name.
var HandlePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,38}$`)

// DigestPattern is the form of an image digest.
var DigestPattern = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// Runtime is a container image pinned by digest, with the command that runs code
// in it and the limits that bound each run.
type Runtime struct {
	Handle         string     `json:"handle"`
	Key            string     `json:"runtimeKey"`
	Image          string     `json:"image"`
	Digest         string     `json:"digest"`
	Command        []string   `json:"command"`
	EntrypointFile string     `json:"entrypointFile"`
	Limits         Limits     `json:"limits"`
	Network        bool       `json:"network"`
	Description    string     `json:"description"`
	Validation     Validation `json:"validation"`
	CreatedAt      time.Time  `json:"createdAt"`
	UpdatedAt      time.Time  `json:"updatedAt"`
}

// Limits bound one run.
type Limits struct {
	TimeoutSeconds int     `json:"timeoutSeconds"`
	MemoryMiB      int     `json:"memoryMiB"`
	CPUs           float64 `json:"cpus"`
	Pids           int     `json:"pids"`
	// OutputBytes caps stdout and stderr counted together.
	OutputBytes int64 `json:"outputBytes"`
}

// DefaultLimits apply to a runtime that names none.
var DefaultLimits = Limits{TimeoutSeconds: 30, MemoryMiB: 256, CPUs: 1.0, Pids: 64, OutputBytes: 1 << 20}

// LimitBounds are the widest limits the contract allows; a server may be
// configured with lower maxima.
var (
	MinLimits = Limits{TimeoutSeconds: 1, MemoryMiB: 16, CPUs: 0.1, Pids: 8, OutputBytes: 1024}
	MaxLimits = Limits{TimeoutSeconds: 900, MemoryMiB: 8192, CPUs: 16, Pids: 4096, OutputBytes: 64 << 20}
)

// ValidationStatus is where a runtime's image check stands.
type ValidationStatus string

const (
	ValidationPending   ValidationStatus = "pending"
	ValidationValidated ValidationStatus = "validated"
	ValidationFailed    ValidationStatus = "failed"
)

// Validation is the outcome of the last image check of a runtime.
type Validation struct {
	Status         ValidationStatus `json:"status"`
	CheckedAt      *time.Time       `json:"checkedAt"`
	ResolvedDigest *string          `json:"resolvedDigest"`
	Error          *ErrorDetail     `json:"error"`
}

// Image validation failure codes (CONTRACT.md validate-image).
const (
	EDigestMismatch        = "digest_mismatch"
	EImageNotFound         = "image_not_found"
	ERegistryUnreachable   = "registry_unreachable"
	EInvalidImageReference = "invalid_image_reference"
	EPlatformMismatch      = "platform_mismatch"
)

// ErrorDetail is a code and message recorded on an object (not a failed request).
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Validated reports whether runs may start from this runtime: its image was
// checked and the digest checked is the one it declares now.
func (r *Runtime) Validated() bool {
	return r.Validation.Status == ValidationValidated &&
		r.Validation.ResolvedDigest != nil && *r.Validation.ResolvedDigest == r.Digest
}

// PinnedImage is the reference runs start from: the image name at its digest.
func (r *Runtime) PinnedImage() string {
	return ImageName(r.Image) + "@" + r.Digest
}

// ImageName strips a tag or digest from an image reference
// ("127.0.0.1:5000/qa/python:3.12" → "127.0.0.1:5000/qa/python").
func ImageName(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	slash := strings.LastIndexByte(ref, '/')
	if c := strings.LastIndexByte(ref, ':'); c > slash {
		ref = ref[:c]
	}
	return ref
}

// RuntimeInput is a create-or-replace request for a runtime. Nil fields take
// their defaults (a PUT replaces the whole runtime).
type RuntimeInput struct {
	Image          string       `json:"image"`
	Digest         string       `json:"digest"`
	Command        []string     `json:"command"`
	EntrypointFile *string      `json:"entrypointFile"`
	Limits         *LimitsInput `json:"limits"`
	Network        *bool        `json:"network"`
	Description    *string      `json:"description"`
}

// LimitsInput names some limits; nil ones take their defaults.
type LimitsInput struct {
	TimeoutSeconds *int     `json:"timeoutSeconds"`
	MemoryMiB      *int     `json:"memoryMiB"`
	CPUs           *float64 `json:"cpus"`
	Pids           *int     `json:"pids"`
	OutputBytes    *int64   `json:"outputBytes"`
}

// Page is one page of a list, newest or lowest first as the list defines, with
// an opaque cursor for the next page ("" when this is the last).
type Page[T any] struct {
	Items []T
	// Cursors holds, for each item, the cursor that continues after it.
	Cursors []string
	// NextCursor continues after the page; "" on the last page.
	NextCursor string
}
