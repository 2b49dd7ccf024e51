package docker_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
)

// present reports whether the engine has ref.
func present(t *testing.T, ref string) bool {
	t.Helper()
	_, err := testenv.Docker(t).ImageInspect(context.Background(), ref)
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func imageID(t *testing.T, ref string) string {
	t.Helper()
	img, err := testenv.Docker(t).ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return img.ID
}

func release(t *testing.T, e *docker.Engine, keep ...string) []string {
	t.Helper()
	released, err := e.ReleaseImages(context.Background(), func(d string) bool { return slices.Contains(keep, d) })
	if err != nil {
		t.Fatal(err)
	}
	return released
}

// An image validation pulled is held by the installation that pulled it and
// removed once none holds it, no container uses it and nothing else names
// it; what keep wants stays.
func TestReleaseImages(t *testing.T) {
	image, digest, pin := testenv.PushedImage(t)
	instance := "test-" + uniqueTag()
	a := newEngine(t, docker.WithInstance(instance+"-a"))
	b := newEngine(t, docker.WithInstance(instance+"-b"))
	holdA := "coderun-hold/" + instance + "-a:" + strings.Replace(digest, ":", "-", 1)
	holdB := "coderun-hold/" + instance + "-b:" + strings.Replace(digest, ":", "-", 1)

	if _, fail := check(t, a, image, digest); fail != nil {
		t.Fatal(fail)
	}
	if !present(t, holdA) {
		t.Fatalf("validation pulled %s without holding it", pin)
	}
	id := imageID(t, pin)
	if got := release(t, a, digest); len(got) != 0 || !present(t, pin) {
		t.Fatalf("released %v of an image still wanted", got)
	}

	// Another installation on the engine validates the same image.
	if _, fail := check(t, b, image, digest); fail != nil {
		t.Fatal(fail)
	}
	if got := release(t, a); !slices.Equal(got, []string{digest}) {
		t.Fatalf("released %v, want %s", got, digest)
	}
	if present(t, holdA) || !present(t, holdB) || !present(t, pin) {
		t.Fatalf("after the first installation let go: its hold %v, the other's %v, the image %v; want only the latter two",
			present(t, holdA), present(t, holdB), present(t, pin))
	}

	// A container, even one never started, keeps the image.
	cli := testenv.Docker(t)
	ctr, err := cli.ContainerCreate(context.Background(), client.ContainerCreateOptions{Config: &container.Config{Image: pin}})
	if err != nil {
		t.Fatal(err)
	}
	if got := release(t, b); len(got) != 0 || !present(t, holdB) || !present(t, pin) {
		t.Fatalf("released %v of an image a container uses", got)
	}
	if _, err := cli.ContainerRemove(context.Background(), ctr.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if got := release(t, b); !slices.Equal(got, []string{digest}) || present(t, holdB) || present(t, pin) || present(t, id) {
		t.Fatalf("released %v; the image is still there: %v", got, present(t, id))
	}

	// Validated again, it is pulled and held again.
	if _, fail := check(t, a, image, digest); fail != nil || !present(t, holdA) || !present(t, pin) {
		t.Fatalf("validated again: %v, hold %v, image %v", fail, present(t, holdA), present(t, pin))
	}
	release(t, a)
}

// An image someone else tagged, and a local-only image, stay on the engine.
func TestReleaseImagesLeavesWhatOthersName(t *testing.T) {
	image, digest, pin := testenv.PushedImage(t)
	e := newEngine(t, docker.WithInstance("test-"+uniqueTag()))
	if _, fail := check(t, e, image, digest); fail != nil {
		t.Fatal(fail)
	}
	cli := testenv.Docker(t)
	operator := "coderun-test/operator:" + uniqueTag()
	if _, err := cli.ImageTag(context.Background(), client.ImageTagOptions{Source: pin, Target: operator}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ImageRemove(context.Background(), operator, client.ImageRemoveOptions{}) })

	// A local-only image is checked against the engine's copy and not held.
	local := busybox(t)
	if _, fail := check(t, e, demoImage, local); fail != nil {
		t.Fatal(fail)
	}
	if got := release(t, e); !slices.Equal(got, []string{digest}) {
		t.Fatalf("released %v, want only %s", got, digest)
	}
	if !present(t, pin) || !present(t, operator) || !present(t, local) {
		t.Fatalf("the image %v, the operator's tag %v, the local image %v: want all three kept",
			present(t, pin), present(t, operator), present(t, local))
	}
}

// A copy of an image another installation pulled, validated from the engine
// alone (its reference names no registry it was pulled from), is held by
// this installation too: the other one's release leaves it.
func TestLocalCopiesOfHeldImagesAreHeld(t *testing.T) {
	image, digest, pin := testenv.PushedImage(t)
	instance := "test-" + uniqueTag()
	a := newEngine(t, docker.WithInstance(instance+"-a"))
	b := newEngine(t, docker.WithInstance(instance+"-b"))
	if _, fail := check(t, a, image, digest); fail != nil {
		t.Fatal(fail)
	}
	id := imageID(t, pin)
	cli := testenv.Docker(t)
	local := testenv.Registry(t) + "/coderun-test/never-pushed:" + uniqueTag()
	if _, err := cli.ImageTag(context.Background(), client.ImageTagOptions{Source: pin, Target: local}); err != nil {
		t.Fatal(err)
	}
	if _, fail := check(t, b, local, digest); fail != nil {
		t.Fatal(fail)
	}
	if _, err := cli.ImageRemove(context.Background(), local, client.ImageRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := release(t, a); !slices.Equal(got, []string{digest}) || !present(t, pin) {
		t.Fatalf("released %v; the image is there: %v, want it kept for the other installation", got, present(t, pin))
	}
	if got := release(t, b); !slices.Equal(got, []string{digest}) || present(t, id) {
		t.Fatalf("released %v; the image is still there: %v", got, present(t, id))
	}
}
