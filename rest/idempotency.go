package rest

import (
	"net/http"

	"github.com/gharart/coderun/service"
)

// idempotencyKey is the request's Idempotency-Key header, which every POST and
// PUT route passes to its write; the service checks its form.
func idempotencyKey(r *http.Request) service.IdempotencyKey {
	return service.IdempotencyKey(r.Header.Get("Idempotency-Key"))
}

// markReplayed tells the caller that the answer repeats an earlier write made
// with the same Idempotency-Key.
func markReplayed(w http.ResponseWriter, replayed bool) {
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
}
