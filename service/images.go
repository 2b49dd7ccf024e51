package service

import (
	"context"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/gharart/coderun/store"
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

// imageReleaseTimeout bounds one release of images.
const imageReleaseTimeout = 2 * time.Minute

// ReleaseImages releases the images this installation pulled that no runtime
// of any handle declares and no unfinished run starts from (see
// Options.ReleaseImages). While an image check runs in this process it does
// nothing: the check may be pulling an image for a runtime not yet counted.
func (s *Service) ReleaseImages(ctx context.Context) {
	r, ok := s.images.(ImageReleaser)
	if !ok || !s.opts.ReleaseImages {
		return
	}
	if !s.checks.releasing.TryLock() {
		s.log.DebugContext(ctx, "images not released: an image check is running")
		return
	}
	defer s.checks.releasing.Unlock()
	ctx, cancel := context.WithTimeout(ctx, imageReleaseTimeout)
	defer cancel()
	var inUse map[string]bool
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		inUse, err = tx.ImageDigestsInUse(ctx)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.WarnContext(ctx, "releasing images failed", "err", err)
		}
		return
	}
	released, err := r.ReleaseImages(ctx, func(digest string) bool { return inUse[digest] })
	if len(released) > 0 {
		s.log.InfoContext(ctx, "released images no runtime or unfinished run uses", "digests", released)
	}
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "releasing images failed", "err", err)
	}
}
