package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// An installation holds each image it pulls with a tag of its own,
// coderun-hold/INSTANCE:sha256-HEX, so that it knows which images are its to
// remove and leaves alone those it did not pull, those an operator tagged and
// those another installation on the same engine holds. ReleaseImages lets go
// of the holds no longer needed and removes an image once nothing else names
// it.

// holdRepos is what the repositories of every installation's hold tags
// start with.
const holdRepos = "coderun-hold/"

// holdRepo is the repository of this installation's hold tags.
func (e *Engine) holdRepo() string {
	return holdRepos + strings.ToLower(e.instance)
}

// holdTag is the tag with which this installation holds the image at digest.
func (e *Engine) holdTag(digest string) string {
	return e.holdRepo() + ":" + strings.Replace(digest, ":", "-", 1)
}

// hold tags the image source (a reference or an image id), validated as
// digest, with this installation's hold tag.
func (e *Engine) hold(ctx context.Context, source, digest string) error {
	_, err := e.cli.ImageTag(ctx, client.ImageTagOptions{Source: source, Target: e.holdTag(digest)})
	if err != nil {
		return fmt.Errorf("hold %s: %w", source, err)
	}
	return nil
}

// ReleaseImages lets go of this installation's hold on every image whose
// manifest digest keep does not want, and removes such an image from the
// engine when the hold was the last thing naming it besides the digest
// references it was pulled by: an image another installation holds, that
// carries any other tag, or that a container (even a stopped one) uses, is
// left on the engine. It returns the digests it let go of.
func (e *Engine) ReleaseImages(ctx context.Context, keep func(digest string) bool) ([]string, error) {
	prefix := e.holdRepo() + ":"
	list, err := e.cli.ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", e.holdRepo())})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var released []string
	var errs []error
	for _, img := range list.Items {
		for _, tag := range img.RepoTags {
			hex, ok := strings.CutPrefix(tag, prefix+"sha256-")
			if !ok {
				continue
			}
			digest := "sha256:" + hex
			if keep(digest) {
				continue
			}
			done, err := e.release(ctx, img.ID, tag, digest)
			if err != nil {
				errs = append(errs, err)
			}
			if done {
				released = append(released, digest)
			}
		}
	}
	return released, errors.Join(errs...)
}

// release lets go of the hold tag on the image id, held for digest; done
// says the hold is gone.
func (e *Engine) release(ctx context.Context, id, tag, digest string) (done bool, err error) {
	img, err := e.cli.ImageInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect %s: %w", tag, err)
	}
	named := len(img.RepoTags) > 1 // another hold, or any other tag
	if !named {
		used, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Limit: 1,
			Filters: make(client.Filters).Add("ancestor", id)})
		if err != nil {
			return false, fmt.Errorf("list the containers of %s: %w", tag, err)
		}
		if len(used.Items) > 0 {
			return false, nil // the next round, once the container is gone
		}
		// The references the image was pulled by go first: the hold keeps
		// the image meanwhile, and removing it last removes the image.
		for _, rd := range img.RepoDigests {
			// (An engine on the containerd image store lists the holds here
			// too; they are tags, removed as such.)
			if strings.HasSuffix(rd, "@"+digest) && !strings.HasPrefix(rd, holdRepos) {
				if _, err := e.cli.ImageRemove(ctx, rd, client.ImageRemoveOptions{PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
					return false, fmt.Errorf("remove %s: %w", rd, err)
				}
			}
		}
	}
	if _, err := e.cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("remove %s: %w", tag, err)
	}
	return true, nil
}
