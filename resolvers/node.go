package resolvers

import (
	"encoding/base64"
	"strings"
)

// Global ids (Node.id) are opaque to clients: unpadded URL-safe base64 of
// "<type>:<reference>", e.g. "Handle:acme", "CodeRuntime:acme/python312" or
// "CodeRun:acme/run_01J…". Handle names, runtime keys and run ids cannot
// contain "/", so a reference splits unambiguously.
const (
	nodeHandle  = "Handle"
	nodeRuntime = "CodeRuntime"
	nodeRun     = "CodeRun"
)

// nodeRef is what a global id points at.
type nodeRef struct {
	handle string
	key    string // the runtime's key or the run's id; empty for a handle
}

func handleID(handle string) string { return encodeNodeID(nodeHandle, handle) }

func runtimeID(handle, key string) string { return encodeNodeID(nodeRuntime, handle+"/"+key) }

func runID(handle, id string) string { return encodeNodeID(nodeRun, handle+"/"+id) }

func encodeNodeID(kind, ref string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + ref))
}

// parseNodeID decodes a global id; ok is false for anything this API did not
// hand out.
func parseNodeID(id string) (kind string, ref nodeRef, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		return "", nodeRef{}, false
	}
	kind, rest, found := strings.Cut(string(b), ":")
	if !found || rest == "" {
		return "", nodeRef{}, false
	}
	switch kind {
	case nodeHandle:
		return kind, nodeRef{handle: rest}, !strings.Contains(rest, "/")
	case nodeRuntime, nodeRun:
		handle, key, found := strings.Cut(rest, "/")
		return kind, nodeRef{handle: handle, key: key}, found && handle != "" && key != ""
	}
	return "", nodeRef{}, false
}
