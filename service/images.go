package service

import (
	"strings"

	"github.com/distribution/reference"
)

// imageAllowed reports whether handle's runtimes may use image: any image
// when the server names no prefixes, else one whose repository (registry
// included: "busybox" is docker.io/library/busybox) is a prefix or lies under
// it, path segment by path segment, where "{handle}" in a prefix stands for
// the handle's name. An unparsable reference is
// not allowed. Prefixes tie a handle to its own repositories, so that it
// cannot run another tenant's images, and keep registries the server does
// not trust (or internal hosts) out of image checks.
func imageAllowed(prefixes []string, handle, image string) bool {
	if len(prefixes) == 0 {
		return true
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return false
	}
	name := named.Name()
	for _, p := range prefixes {
		p = strings.TrimSuffix(strings.ReplaceAll(p, "{handle}", handle), "/")
		if name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	return false
}
