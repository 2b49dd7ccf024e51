package docker_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/moby/moby/client"
)

// wrongDigest is well formed and names no image anywhere.
const wrongDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

func newEngine(t *testing.T, opts ...docker.Option) *docker.Engine {
	t.Helper()
	testenv.Docker(t)
	e, err := docker.New(append([]docker.Option{docker.WithInit(testenv.Init(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.CloseEngine(e) })
	if err := e.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

// uniqueTag keeps runs against a long-lived registry and engine apart.
func uniqueTag() string { return fmt.Sprintf("t%d", time.Now().UnixNano()) }

// forget removes refs from the engine (tags and digest references) at cleanup.
func forget(t *testing.T, refs ...string) {
	t.Helper()
	cli := testenv.Docker(t)
	t.Cleanup(func() {
		for _, ref := range refs {
			cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true})
		}
	})
}

func check(t *testing.T, e *docker.Engine, image, digest string) (string, *coderun.ErrorDetail) {
	t.Helper()
	resolved, fail, err := e.CheckImage(context.Background(), image, digest)
	if err != nil {
		t.Fatalf("CheckImage(%s, %s): engine error %v", image, digest, err)
	}
	t.Logf("CheckImage(%q, %q) = %q, %+v", image, digest, resolved, fail)
	return resolved, fail
}

func wantFailure(t *testing.T, fail *coderun.ErrorDetail, code string, inMessage ...string) {
	t.Helper()
	if fail == nil {
		t.Fatalf("got no failure, want %s", code)
	}
	if fail.Code != code {
		t.Fatalf("got failure %s (%s), want %s", fail.Code, fail.Message, code)
	}
	for _, s := range inMessage {
		if !strings.Contains(fail.Message, s) {
			t.Errorf("failure message %q does not mention %q", fail.Message, s)
		}
	}
}

func TestCheckImageAgainstRegistry(t *testing.T) {
	reg := testenv.Registry(t)
	e := newEngine(t)
	cli := testenv.Docker(t)
	ctx := context.Background()

	name := reg + "/coderun-test/busybox"
	ref := name + ":" + uniqueTag()
	testenv.BusyboxImage(t, ref)
	forget(t, ref)
	digest := testenv.PushImage(t, ref)
	pinned := name + "@" + digest
	forget(t, pinned)

	t.Run("the declared digest is pulled and ready", func(t *testing.T) {
		// Leave the engine without the pushed image, so only a pull can bring it back.
		// Untagging the last tag may take the digest reference with it.
		for _, r := range []string{ref, pinned} {
			if _, err := cli.ImageRemove(ctx, r, client.ImageRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				t.Fatalf("remove %s: %v", r, err)
			}
		}
		if _, err := cli.ImageInspect(ctx, pinned); err == nil {
			t.Fatalf("%s still on the engine before the check", pinned)
		}

		resolved, fail := check(t, e, ref, digest)
		if fail != nil || resolved != digest {
			t.Fatalf("got (%q, %+v), want (%q, nil)", resolved, fail, digest)
		}
		if _, err := cli.ImageInspect(ctx, pinned); err != nil {
			t.Fatalf("after the check, the engine has no %s: %v", pinned, err)
		}
	})

	t.Run("a different digest is a mismatch naming both", func(t *testing.T) {
		resolved, fail := check(t, e, ref, wrongDigest)
		wantFailure(t, fail, coderun.EDigestMismatch, digest, wrongDigest)
		if resolved != digest {
			t.Errorf("resolved %q, want what the registry serves, %q", resolved, digest)
		}
	})

	t.Run("a missing tag is not found", func(t *testing.T) {
		resolved, fail := check(t, e, name+":no-such-tag", digest)
		wantFailure(t, fail, coderun.EImageNotFound)
		if resolved != "" {
			t.Errorf("resolved %q, want none", resolved)
		}
	})

	t.Run("a missing repository is not found", func(t *testing.T) {
		_, fail := check(t, e, reg+"/coderun-test/no-such-repo:1", digest)
		wantFailure(t, fail, coderun.EImageNotFound)
	})

	t.Run("an image whose layer the registry lost fails while pulling", func(t *testing.T) {
		// Content of its own, so the engine holds none of it and must download it.
		lostRef := reg + "/coderun-test/lost:" + uniqueTag()
		lostDigest := pushImageFor(t, reg, lostRef, "linux", "amd64")
		forget(t, coderun.ImageName(lostRef)+"@"+lostDigest)
		deleteLayers(t, reg, "coderun-test/lost", lostDigest)

		resolved, fail := check(t, e, lostRef, lostDigest)
		wantFailure(t, fail, coderun.EImageNotFound, "pulling")
		if resolved != lostDigest {
			t.Errorf("resolved %q, want %q (the manifest is still served)", resolved, lostDigest)
		}
	})
}

func TestCheckImageRegistryStopped(t *testing.T) {
	e := newEngine(t)
	reg, stop := testenv.StartRegistry(t)
	ref := reg + "/coderun-test/busybox:" + uniqueTag()
	testenv.BusyboxImage(t, ref)
	forget(t, ref)
	digest := testenv.PushImage(t, ref)
	forget(t, coderun.ImageName(ref)+"@"+digest)

	if resolved, fail := check(t, e, ref, digest); fail != nil || resolved != digest {
		t.Fatalf("with the registry up: got (%q, %+v), want (%q, nil)", resolved, fail, digest)
	}
	stop()
	// The engine still holds the image it pulled; the registry's answer counts.
	resolved, fail := check(t, e, ref, digest)
	wantFailure(t, fail, coderun.ERegistryUnreachable, reg)
	if resolved != "" {
		t.Errorf("resolved %q, want none", resolved)
	}
}

func TestCheckImageRegistryTooSlow(t *testing.T) {
	e := newEngine(t, docker.WithRegistryTimeout(time.Second))
	// A registry that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed at cleanup
			}
			conns = append(conns, c)
		}
	}()

	start := time.Now()
	_, fail := check(t, e, l.Addr().String()+"/coderun-test/busybox:1", wrongDigest)
	wantFailure(t, fail, coderun.ERegistryUnreachable, "1s")
	// Generous for a loaded machine: without the timeout the check would
	// wait on the silent registry for as long as the test let it.
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the check took %s, want about the 1 s registry timeout", took)
	}
}

func TestCheckImageLocalOnly(t *testing.T) {
	e := newEngine(t)

	t.Run("an image built on the engine, named with no registry", func(t *testing.T) {
		ref := "coderun-test/busybox:" + uniqueTag()
		id := testenv.BusyboxImage(t, ref)
		forget(t, ref)

		resolved, fail := check(t, e, ref, id)
		if fail != nil || resolved != id {
			t.Fatalf("got (%q, %+v), want (%q, nil)", resolved, fail, id)
		}
		resolved, fail = check(t, e, ref, wrongDigest)
		wantFailure(t, fail, coderun.EDigestMismatch, id, wrongDigest)
		if resolved != id {
			t.Errorf("resolved %q, want the image ID %q", resolved, id)
		}
	})

	t.Run("an image named for a registry but never pushed", func(t *testing.T) {
		// No registry listens on this port: only the engine's copy can answer.
		ref := "127.0.0.1:9/coderun-test/unpushed:" + uniqueTag()
		id := testenv.BusyboxImage(t, ref)
		forget(t, ref)

		resolved, fail := check(t, e, ref, id)
		if fail != nil || resolved != id {
			t.Fatalf("got (%q, %+v), want (%q, nil)", resolved, fail, id)
		}
	})

	t.Run("a name with no registry that the engine does not have asks Docker Hub", func(t *testing.T) {
		// These machines cannot reach Docker Hub; where one can, the repository
		// does not exist. Either way it is no validated image.
		_, fail := check(t, e, "coderun-test/never-built:"+uniqueTag(), wrongDigest)
		if fail == nil || (fail.Code != coderun.ERegistryUnreachable && fail.Code != coderun.EImageNotFound) {
			t.Fatalf("got %+v, want registry_unreachable or image_not_found", fail)
		}
	})
}

func TestCheckImageInvalidReference(t *testing.T) {
	e := newEngine(t)
	for _, tc := range []struct{ image, digest string }{
		{"", wrongDigest},
		{"Coderun/Upper:1", wrongDigest},
		{"127.0.0.1:5000/x::1", wrongDigest},
		{"busybox:1", "sha256:abc"},
		{"busybox:1", "md5:00000000000000000000000000000000"},
		{"busybox:1", strings.ToUpper(wrongDigest)},
		{"busybox:1", ""},
	} {
		t.Run(tc.image+" "+tc.digest, func(t *testing.T) {
			resolved, fail := check(t, e, tc.image, tc.digest)
			wantFailure(t, fail, coderun.EInvalidImageReference)
			if resolved != "" {
				t.Errorf("resolved %q, want none", resolved)
			}
		})
	}
}

func TestCheckImagePlatformMismatch(t *testing.T) {
	reg := testenv.Registry(t)
	e := newEngine(t)
	repo := "coderun-test/arm64-only"
	ref := reg + "/" + repo + ":" + uniqueTag()
	digest := pushImageFor(t, reg, ref, "linux", "arm64")
	forget(t, ref, coderun.ImageName(ref)+"@"+digest)

	resolved, fail := check(t, e, ref, digest)
	wantFailure(t, fail, coderun.EPlatformMismatch, "linux/arm64")
	if resolved != digest {
		t.Errorf("resolved %q, want %q", resolved, digest)
	}
}

func TestCheckImageEngineDown(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	e, err := docker.New()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Ping(context.Background()); err == nil {
		t.Fatal("Ping succeeded with no engine")
	}
	resolved, fail, err := e.CheckImage(context.Background(), "127.0.0.1:5000/coderun-test/busybox:1", wrongDigest)
	if err == nil || fail != nil || resolved != "" {
		t.Fatalf("got (%q, %+v, %v), want an engine error and no verdict", resolved, fail, err)
	}
}

// pushImageFor pushes, straight through the registry API, a one-layer image
// whose config says it is for os/arch, and returns its manifest digest. The
// engine cannot build or import one: it stamps its own platform on images.
func pushImageFor(t *testing.T, reg, ref, os, arch string) string {
	t.Helper()
	repo, tag, _ := strings.Cut(strings.TrimPrefix(ref, reg+"/"), ":")

	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	content := []byte(ref + " for " + os + "/" + arch + "\n")
	tw.WriteHeader(&tar.Header{Name: "platform.txt", Mode: 0o644, Size: int64(len(content))})
	tw.Write(content)
	tw.Close()
	var layer bytes.Buffer
	zw := gzip.NewWriter(&layer)
	zw.Write(tarball.Bytes())
	zw.Close()

	config, _ := json.Marshal(map[string]any{
		"architecture": arch,
		"os":           os,
		"config":       map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{sha256Digest(tarball.Bytes())}},
	})
	blob := func(mediaType string, data []byte) map[string]any {
		return map[string]any{"mediaType": mediaType, "size": len(data), "digest": uploadBlob(t, reg, repo, data)}
	}
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.docker.distribution.manifest.v2+json",
		"config":        blob("application/vnd.docker.container.image.v1+json", config),
		"layers":        []any{blob("application/vnd.docker.image.rootfs.diff.tar.gzip", layer.Bytes())},
	})
	resp := registryDo(t, http.MethodPut, fmt.Sprintf("http://%s/v2/%s/manifests/%s", reg, repo, tag),
		"application/vnd.docker.distribution.manifest.v2+json", manifest, http.StatusCreated)
	if got, want := resp.Header.Get("Docker-Content-Digest"), sha256Digest(manifest); got != want {
		t.Fatalf("registry stored the manifest as %q, want %q", got, want)
	}
	return sha256Digest(manifest)
}

func uploadBlob(t *testing.T, reg, repo string, data []byte) string {
	t.Helper()
	digest := sha256Digest(data)
	resp := registryDo(t, http.MethodPost, fmt.Sprintf("http://%s/v2/%s/blobs/uploads/", reg, repo), "", nil, http.StatusAccepted)
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("blob upload: %v", err)
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	registryDo(t, http.MethodPut, loc.String(), "application/octet-stream", data, http.StatusCreated)
	return digest
}

// deleteLayers deletes from the registry the layer blobs of the manifest at digest.
func deleteLayers(t *testing.T, reg, repo, digest string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/%s/manifests/%s", reg, repo, digest), nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct{ Layers []struct{ Digest string } }
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("read manifest %s: %v (%d layers)", digest, err, len(m.Layers))
	}
	for _, l := range m.Layers {
		registryDo(t, http.MethodDelete, fmt.Sprintf("http://%s/v2/%s/blobs/%s", reg, repo, l.Digest), "", nil, http.StatusAccepted)
	}
}

func registryDo(t *testing.T, method, url, contentType string, body []byte, want int) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s, want %d", method, url, resp.Status, want)
	}
	return resp
}

func sha256Digest(data []byte) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256(data))
}
