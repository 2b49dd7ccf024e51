package docker

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/gharart/coderun"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// amd64 is accepted on every engine besides the engine's own platform: engines
// on other architectures commonly run it under emulation (qemu, Rosetta).
var amd64 = platform{OS: "linux", Arch: "amd64"}

// CheckImage checks that image is served at digest and makes image@digest
// available on the engine, so runs start from exactly those bytes.
//
// resolved is the digest found for image ("" when none could be); fail is nil
// when it is the declared digest and the image is ready, else the reason it is
// not (a coderun.E* image validation code). err reports a failure of the engine
// itself, or ctx ending: no verdict on the image.
//
// An image is local-only, and checked against the engine's copy alone, when the
// engine has it and either its reference names no registry host (docker.io is
// then only the default, not a registry the tenant chose; such images are built
// or loaded on the engine) or the copy was never pushed to or pulled from this
// repository (no RepoDigest under its name). Its digest must then be one of the
// copy's RepoDigests' digests or its image ID, and nothing is pulled. Every
// other image is checked against its registry even when the engine holds a
// copy, so a registry that is down shows as registry_unreachable instead of
// being masked by that copy.
func (e *Engine) CheckImage(ctx context.Context, image, digest string) (resolved string, fail *coderun.ErrorDetail, err error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", failure(coderun.EInvalidImageReference, "image %q is not a valid image reference: %v", image, err), nil
	}
	if !coderun.DigestPattern.MatchString(digest) {
		return "", failure(coderun.EInvalidImageReference, "digest %q is not of the form sha256:<64 lowercase hex digits>", digest), nil
	}
	local, err := e.localCopy(ctx, named)
	if err != nil {
		return "", nil, err
	}
	if local != nil && (reference.Domain(named) == "docker.io" || local.repoDigest == "") {
		resolved, fail := local.check(named, digest)
		// A copy another installation pulled is held here too, so that its
		// release leaves the copy to this one.
		if fail == nil && local.held {
			err = e.hold(ctx, local.id, digest)
		}
		return resolved, fail, err
	}
	return e.checkRegistry(ctx, named, digest)
}

// localCopy is what the engine holds under an image reference.
type localCopy struct {
	id         string   // the image ID: the digest of its config
	digests    []string // the manifest digests of all its RepoDigests
	repoDigest string   // the manifest digest under the reference's own name, if any
	held       bool     // an installation holds it (see ReleaseImages)
}

// localCopy returns the engine's copy of the image named, or nil if it has none.
func (e *Engine) localCopy(ctx context.Context, named reference.Named) (*localCopy, error) {
	// The full name, never the familiar one: a short name could be taken for an
	// image ID prefix.
	img, err := e.cli.ImageInspect(ctx, reference.TagNameOnly(named).String())
	if cerrdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inspect local image %s: %w", named, err)
	}
	c := &localCopy{id: img.ID}
	for _, tag := range img.RepoTags {
		c.held = c.held || strings.HasPrefix(tag, holdRepos)
	}
	for _, rd := range img.RepoDigests {
		ref, err := reference.ParseNormalizedNamed(rd)
		if err != nil {
			continue
		}
		if d, ok := ref.(reference.Digested); ok {
			c.digests = append(c.digests, d.Digest().String())
			if ref.Name() == named.Name() {
				c.repoDigest = d.Digest().String()
			}
		}
	}
	return c, nil
}

// check checks digest against the copy of a local-only image.
func (c *localCopy) check(named reference.Named, digest string) (string, *coderun.ErrorDetail) {
	if digest == c.id || slices.Contains(c.digests, digest) {
		return digest, nil
	}
	// Report the manifest digest under this name if there is one (what a
	// registry would serve), else the image ID every local image has.
	found := cmp.Or(c.repoDigest, c.id)
	return found, failure(coderun.EDigestMismatch,
		"local image %s is %s, not the declared digest %s", reference.FamiliarString(named), found, digest)
}

// checkRegistry asks the registry what it serves for named, compares that with
// digest and the engine's platform, then pulls named@digest.
func (e *Engine) checkRegistry(ctx context.Context, named reference.Named, digest string) (string, *coderun.ErrorDetail, error) {
	rctx, cancel := context.WithTimeout(ctx, e.registryTimeout)
	defer cancel()
	dist, err := e.cli.DistributionInspect(rctx, named.String(), client.DistributionInspectOptions{})
	if err != nil {
		fail, err := verdict(ctx, rctx, e.registryTimeout, err, true)
		if fail != nil {
			fail.Message = fmt.Sprintf("asking the registry for %s: %s", reference.FamiliarString(named), fail.Message)
		}
		return "", fail, err
	}
	found := dist.Descriptor.Digest.String()
	if found != digest {
		return found, failure(coderun.EDigestMismatch,
			"registry serves %s as %s, not the declared digest %s", reference.FamiliarString(named), found, digest), nil
	}

	own, err := e.enginePlatform(ctx)
	if err != nil {
		return found, nil, err
	}
	target, ok := pickPlatform(dist.Platforms, own)
	if !ok {
		return found, failure(coderun.EPlatformMismatch,
			"%s offers %s; this engine runs %s", reference.FamiliarString(named), platformList(dist.Platforms), own), nil
	}

	pin, err := reference.WithDigest(reference.TrimNamed(named), dist.Descriptor.Digest)
	if err != nil {
		return found, nil, fmt.Errorf("pin %s to %s: %w", named, found, err)
	}
	fail, err := e.pull(ctx, pin, target, 0)
	return found, fail, err
}

// pickPlatform returns the platform to pull among those the registry offers:
// the engine's own, else amd64. A registry that names none (an old manifest
// schema) leaves the choice to the engine, which refuses what it cannot run.
func pickPlatform(offered []ocispec.Platform, own platform) (*platform, bool) {
	if len(offered) == 0 {
		return nil, true
	}
	for _, want := range []platform{own, amd64} {
		for _, p := range offered {
			if p.OS == want.OS && p.Architecture == want.Arch {
				return &want, true
			}
		}
	}
	return nil, false
}

func platformList(ps []ocispec.Platform) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = platform{OS: p.OS, Arch: p.Architecture}.String()
	}
	return strings.Join(names, ", ")
}

// pull makes pin present on the engine, for target's platform when given,
// and holds it for this installation (see ReleaseImages); attempt counts the
// pulls made before this one.
func (e *Engine) pull(ctx context.Context, pin reference.Canonical, target *platform, attempt int) (*coderun.ErrorDetail, error) {
	pctx, cancel := context.WithTimeout(ctx, e.pullTimeout)
	defer cancel()
	var opts client.ImagePullOptions
	if target != nil {
		opts.Platforms = []ocispec.Platform{{OS: target.OS, Architecture: target.Arch}}
	}
	resp, err := e.cli.ImagePull(pctx, pin.String(), opts)
	if err == nil {
		// The engine reports a pull that fails midway in its progress stream,
		// not in the HTTP status: read the stream to its end.
		err = resp.Wait(pctx)
	}
	if err != nil {
		fail, err := verdict(ctx, pctx, e.pullTimeout, err, false)
		if fail != nil {
			fail.Message = fmt.Sprintf("pulling %s: %s", reference.FamiliarString(pin), fail.Message)
		}
		return fail, err
	}
	// A stream cut short without an error message is not a pull.
	if _, err := e.cli.ImageInspect(ctx, pin.String()); err != nil {
		return nil, fmt.Errorf("pulled %s, but the engine does not have it: %w", pin, err)
	}
	if err := e.hold(ctx, pin.String(), pin.Digest().String()); err != nil {
		return nil, err
	}
	// Another installation releasing the image between the pull and the
	// hold may have taken the reference runs start from: pull it again.
	if _, err := e.cli.ImageInspect(ctx, pin.String()); cerrdefs.IsNotFound(err) && attempt < 2 {
		return e.pull(ctx, pin, target, attempt+1)
	} else if err != nil {
		return nil, fmt.Errorf("held %s, but the engine does not have it: %w", pin, err)
	}
	return nil, nil
}

// verdict classifies err, a failed registry interaction that ran under opCtx:
// ctx bounded by limit. It returns a validation failure when err says something
// about the image or its registry, and an error when the engine itself failed
// or ctx ended. registryOnly says the engine did nothing but ask the registry,
// so a failure it does not classify is the registry's.
func verdict(ctx, opCtx context.Context, limit time.Duration, err error, registryOnly bool) (*coderun.ErrorDetail, error) {
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case opCtx.Err() != nil:
		return failure(coderun.ERegistryUnreachable, "no answer within %s", limit), nil
	case client.IsErrConnectionFailed(err):
		return nil, err
	}
	// The message is the engine's report on the registry (e.g. "manifest
	// unknown", "dial tcp …: connection refused"): what the tenant needs to fix it.
	msg := strings.TrimPrefix(err.Error(), "Error response from daemon: ")
	if code := classify(err, msg); code != "" {
		return failure(code, "%s", msg), nil
	}
	if registryOnly {
		return failure(coderun.ERegistryUnreachable, "%s", msg), nil
	}
	return nil, err
}

// classify maps an engine error about an image to a validation failure code, or
// "" when it does not recognise it. The engine's error classes come first; its
// text is the last resort, because API 1.41 reports most registry failures as
// plain 500s, and a pull's stream carries messages without classes at all.
func classify(err error, msg string) string {
	switch {
	case cerrdefs.IsNotFound(err), cerrdefs.IsUnauthorized(err), cerrdefs.IsPermissionDenied(err):
		// A registry answers "denied" for a repository that does not exist as
		// often as for one the engine may not read: to us both are not found.
		return coderun.EImageNotFound
	case cerrdefs.IsInvalidArgument(err):
		return coderun.EInvalidImageReference
	case cerrdefs.IsUnavailable(err):
		return coderun.ERegistryUnreachable
	}
	msg = strings.ToLower(msg)
	for _, s := range []string{"manifest unknown", "name unknown", "blob unknown", "unknown blob", "not found", "pull access denied", "access to the resource is denied"} {
		if strings.Contains(msg, s) {
			return coderun.EImageNotFound
		}
	}
	for _, s := range []string{"connection refused", "no such host", "i/o timeout", "connection reset", "network is unreachable", "no route to host", "server misbehaving", "tls:", "http response to https client"} {
		if strings.Contains(msg, s) {
			return coderun.ERegistryUnreachable
		}
	}
	return ""
}

func failure(code, format string, args ...any) *coderun.ErrorDetail {
	return &coderun.ErrorDetail{Code: code, Message: fmt.Sprintf(format, args...)}
}
