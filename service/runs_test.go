package service_test

import (
	"context"
	"testing"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// A submission is bounded by the server's policy when it is made, not when
// its runtime was put: a network the server no longer gives is refused, and
// limits above the server's maxima are lowered to them.
func TestSubmissionsFollowTheServersPolicyNow(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	before := service.New(db, service.Options{AllowNetwork: true})
	if _, err := before.CreateHandle(ctx, "acme", "alice", 0, 0); err != nil {
		t.Fatal(err)
	}
	alice := as("alice")
	digest := "sha256:" + "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"
	yes, timeout, memory, code := true, 600, 2048, "echo hi"
	for key, network := range map[string]*bool{"net": &yes, "big": nil} {
		in := coderun.RuntimeInput{Image: "example/x", Digest: digest, Network: network,
			Limits: &coderun.LimitsInput{TimeoutSeconds: &timeout, MemoryMiB: &memory}}
		if _, _, _, err := before.PutRuntime(alice, "acme", key, in, ""); err != nil {
			t.Fatal(err)
		}
		// Validated, as if the image had been checked.
		err := db.InTx(ctx, func(tx *store.Tx) error {
			rt, err := tx.GetRuntime(ctx, "acme", key)
			if err != nil {
				return err
			}
			rt.Validation = coderun.Validation{Status: coderun.ValidationValidated, ResolvedDigest: &digest}
			_, err = tx.PutRuntime(ctx, rt)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	after := service.New(db, service.Options{MaxLimits: coderun.Limits{TimeoutSeconds: 60, MemoryMiB: 512, CPUs: 1, Pids: 64, OutputBytes: 1 << 20}})
	_, _, err := after.SubmitRun(alice, "acme", coderun.RunInput{RuntimeKey: "net", Code: &code}, "")
	if coderun.ErrorCode(err) != coderun.EConflict {
		t.Fatalf("a runtime with a network, once the server gives none: %v", err)
	}
	run, _, err := after.SubmitRun(alice, "acme", coderun.RunInput{RuntimeKey: "big", Code: &code}, "")
	if err != nil {
		t.Fatal(err)
	}
	if run.Limits.TimeoutSeconds != 60 || run.Limits.MemoryMiB != 512 {
		t.Fatalf("limits %+v; want them lowered to the server's 60 s and 512 MiB", run.Limits)
	}
}

// With image prefixes, a handle's runtimes use only the repositories the
// server names, {handle} standing for the handle: not another tenant's, not
// another registry's, and not once the prefixes no longer cover them.
func TestImagePrefixesTieRuntimesToRepositories(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	prefixes := []string{"registry.example.com/{handle}/", "docker.io/library/busybox"}
	svc := service.New(db, service.Options{ImagePrefixes: prefixes})
	for _, h := range []string{"acme", "globex"} {
		if _, err := svc.CreateHandle(ctx, h, "alice", 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	alice := as("alice")
	digest := "sha256:" + "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"
	for image, allowed := range map[string]bool{
		"registry.example.com/acme/python:3.12":   true,
		"registry.example.com/acme/tools/gcc":     true,
		"busybox:1.36":                            true, // docker.io/library/busybox
		"docker.io/library/busybox-evil":          false,
		"registry.example.com/globex/python:3.12": false,
		"registry.example.com/acmeco/python":      false,
		"10.0.0.5:5000/acme/python":               false,
		"UPPER/Case":                              false, // not a reference
	} {
		_, _, _, err := svc.PutRuntime(alice, "acme", "rt", coderun.RuntimeInput{Image: image, Digest: digest}, "")
		e := coderun.AsError(err)
		switch {
		case allowed && err != nil:
			t.Errorf("%s: %v, want it allowed", image, err)
		case !allowed && (e == nil || e.Code != coderun.EValidationFailed || e.Fields[0].Field != "image"):
			t.Errorf("%s: %v, want validation_failed on image", image, err)
		}
	}
	// A runtime put before the prefixes named it no longer is run or checked.
	open := service.New(db, service.Options{})
	if _, _, _, err := open.PutRuntime(alice, "globex", "old", coderun.RuntimeInput{Image: "example/x", Digest: digest}, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ValidateRuntimeImage(alice, "globex", "old", ""); coderun.ErrorCode(err) != coderun.EConflict {
		t.Fatalf("validating an image outside the prefixes: %v", err)
	}
	code := "echo hi"
	if _, _, err := svc.SubmitRun(alice, "globex", coderun.RunInput{RuntimeKey: "old", Code: &code}, ""); coderun.ErrorCode(err) != coderun.EConflict {
		t.Fatalf("running an image outside the prefixes: %v", err)
	}
}
