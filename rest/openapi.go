package rest

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 document of the REST routes; a test keeps it true
// to the routing table and to the objects the routes return.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPI)
}
