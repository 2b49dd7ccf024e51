package rest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
)

// An admin validates runtimes against a real registry on loopback through the
// real engine, and sees each outcome recorded on the runtime.
func TestValidateImageAgainstARealRegistry(t *testing.T) {
	registry := testenv.Registry(t)
	ref := registry + "/qa/busybox:" + strings.ToLower(t.Name()[:8])
	testenv.BusyboxImage(t, ref)
	digest := testenv.PushImage(t, ref)

	ownRegistry, stopRegistry := testenv.StartRegistry(t)
	doomedRef := ownRegistry + "/qa/busybox:doomed"
	testenv.BusyboxImage(t, doomedRef)
	doomedDigest := testenv.PushImage(t, doomedRef)

	engine, err := docker.New(docker.WithInit(testenv.Init(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.CloseEngine(engine) })

	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, engine)
		s.handle("acme", "alice")
		tok := s.userJWT("alice")
		validate := func(key, image, digest string) map[string]any {
			t.Helper()
			path := "/v2/handles/acme/code-runtimes/" + key
			if r := s.do("PUT", path, tok, runtimeBody(image, digest)); r.status >= 300 {
				t.Fatalf("PUT: %d %s", r.status, r.body)
			}
			r := s.do("POST", path+"/validate-image", tok, nil)
			if r.status != 200 {
				t.Fatalf("validate-image: %d %s", r.status, r.body)
			}
			rt := r.json(t)
			if got := s.do("GET", path, tok, nil).json(t); fmt.Sprint(got["validation"]) != fmt.Sprint(rt["validation"]) {
				t.Fatalf("validation not stored: %v vs %v", got["validation"], rt["validation"])
			}
			return rt["validation"].(map[string]any)
		}
		failure := func(v map[string]any, code string) string {
			t.Helper()
			if v["status"] != "failed" || v["checkedAt"] == nil {
				t.Fatalf("validation %v, want failed", v)
			}
			e := v["error"].(map[string]any)
			if e["code"] != code {
				t.Fatalf("error %v, want %s", e, code)
			}
			return e["message"].(string)
		}

		t.Run("the digest the registry serves validates", func(t *testing.T) {
			v := validate("good", ref, digest)
			if v["status"] != "validated" || v["resolvedDigest"] != digest || v["error"] != nil || v["checkedAt"] == nil {
				t.Fatalf("validation %v", v)
			}
			// Changing the digest puts the runtime back to pending.
			r := s.do("PUT", "/v2/handles/acme/code-runtimes/good", tok, runtimeBody(ref, aDigest)).json(t)
			if v := r["validation"].(map[string]any); v["status"] != "pending" || v["resolvedDigest"] != nil {
				t.Fatalf("after a digest change: %v", v)
			}
		})
		t.Run("a wrong digest is a mismatch naming both", func(t *testing.T) {
			msg := failure(validate("wrong", ref, aDigest), "digest_mismatch")
			if !strings.Contains(msg, digest) || !strings.Contains(msg, aDigest) {
				t.Fatalf("message does not name both digests: %s", msg)
			}
		})
		t.Run("a missing image", func(t *testing.T) {
			failure(validate("missing", registry+"/qa/no-such-image:1", aDigest), "image_not_found")
		})
		t.Run("a malformed reference", func(t *testing.T) {
			failure(validate("malformed", "UPPER/case::ref", aDigest), "invalid_image_reference")
		})
		t.Run("a local-only image validates by its id", func(t *testing.T) {
			id := testenv.BusyboxImage(t, "coderun-demo/busybox:1")
			if v := validate("local", "coderun-demo/busybox:1", id); v["status"] != "validated" || v["resolvedDigest"] != id {
				t.Fatalf("validation %v", v)
			}
		})
	})

	t.Run("a stopped registry is unreachable", func(t *testing.T) {
		s := newStack(t, testenv.SQLiteURL(t), engine)
		s.handle("acme", "alice")
		tok := s.userJWT("alice")
		path := "/v2/handles/acme/code-runtimes/doomed"
		s.do("PUT", path, tok, runtimeBody(doomedRef, doomedDigest))
		if v := s.do("POST", path+"/validate-image", tok, nil).json(t)["validation"].(map[string]any); v["status"] != "validated" {
			t.Fatalf("before stopping: %v", v)
		}
		stopRegistry()
		v := s.do("POST", path+"/validate-image", tok, nil).json(t)["validation"].(map[string]any)
		if v["status"] != "failed" || v["error"].(map[string]any)["code"] != "registry_unreachable" {
			t.Fatalf("after stopping: %v", v)
		}
	})
}
