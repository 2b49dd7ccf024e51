package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// Every sandbox starts with coderun-init (cmd/coderun-init): it writes the
// run's files, sent ahead of the program's input on stdin, into the
// workspace, a size-limited tmpfs, then becomes the program. The workspace
// cannot be a volume the files are copied into before start: nothing would
// bound what the program writes there on the engine's disk. And a tmpfs
// cannot receive files before the container starts.
const (
	// initDir is where the init's volume is mounted, read-only.
	initDir = "/.coderun"
	// initName is the init's file name in its volume.
	initName = "coderun-init"
)

// WithInit names the coderun-init binary: a static Linux executable for the
// engine's platform, built from cmd/coderun-init. The engine keeps it in a
// volume of its own, named for its contents, and mounts that into every
// sandbox. Prepare fails without one.
func WithInit(path string) Option {
	return func(e *Engine) { e.initPath = path }
}

// initVolume returns the name of the volume holding the init, filling it the
// first time, using image (one the engine has) for the container that copies
// it in. A volume another process filled is checked, not trusted: one left
// half-filled by a crash is filled again.
func (e *Engine) initVolume(ctx context.Context, image string) (string, error) {
	e.initMu.Lock()
	defer e.initMu.Unlock()
	if e.initReady != "" {
		return e.initReady, nil
	}
	if e.initPath == "" {
		return "", errors.New("no coderun-init binary is configured (docker.WithInit)")
	}
	bin, err := os.ReadFile(e.initPath)
	if err != nil {
		return "", fmt.Errorf("read coderun-init: %w", err)
	}
	sum := sha256.Sum256(bin)
	id := hex.EncodeToString(sum[:6])
	volume := "coderun-init-" + id
	helper := containerName("init-" + id + "-" + e.instance)
	labels := map[string]string{LabelManaged: "true", LabelInstance: e.instance, LabelRunID: "init-" + id + "-" + e.instance}
	created, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:   helper,
		Config: &container.Config{Image: image, Labels: labels, Entrypoint: []string{initDir + "/" + initName}},
		HostConfig: &container.HostConfig{
			NetworkMode: "none",
			Mounts:      []mount.Mount{{Type: mount.TypeVolume, Source: volume, Target: initDir}},
		},
	})
	if err != nil {
		return "", engineError(ctx, "create the container that installs coderun-init", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		e.cli.ContainerRemove(rctx, created.ID, client.ContainerRemoveOptions{Force: true})
	}()
	stat, err := e.cli.ContainerStatPath(ctx, created.ID, client.ContainerStatPathOptions{Path: initDir + "/" + initName})
	if err == nil && stat.Stat.Size == int64(len(bin)) {
		e.initReady = volume
		return volume, nil
	}
	if err != nil && !cerrdefs.IsNotFound(err) {
		return "", engineError(ctx, "look for coderun-init", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: initName, Mode: 0o555, Size: int64(len(bin)), ModTime: time.Now()}); err != nil {
		return "", err
	}
	if _, err := tw.Write(bin); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if _, err := e.cli.CopyToContainer(ctx, created.ID, client.CopyToContainerOptions{DestinationPath: initDir, Content: &buf}); err != nil {
		return "", engineError(ctx, "install coderun-init", err)
	}
	e.initReady = volume
	return volume, nil
}

// initInput is what the init reads before the program's own input: the
// archive's length, 8 bytes big-endian, then the archive.
func initInput(files *bytes.Buffer) []byte {
	n := 0
	if files != nil {
		n = files.Len()
	}
	in := make([]byte, 8, 8+n)
	binary.BigEndian.PutUint64(in, uint64(n))
	if files != nil {
		in = append(in, files.Bytes()...)
	}
	return in
}

// initMount is the init's volume, read-only at initDir.
func initMount(volume string) mount.Mount {
	return mount.Mount{Type: mount.TypeVolume, Source: volume, Target: initDir, ReadOnly: true}
}
