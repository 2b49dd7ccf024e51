package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
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
//
// Each Engine keeps the init in a volume of its own, filled once and checked
// byte for byte, so that processes never write a file another may be
// running, and an image (a tenant's choice) never supplies it: the volume is
// mounted with NoCopy everywhere, so the engine never fills it from the
// image's own files.
const (
	// initDir is where the init's volume is mounted, read-only.
	initDir = "/.coderun"
	// initName is the init's file name in its volume.
	initName = "coderun-init"
	// installTimeout bounds installing the init, whatever the caller's
	// context.
	installTimeout = time.Minute
	// LabelInit marks the init's volumes, and the containers that fill them
	// (both also carry LabelInstance).
	LabelInit = "coderun.init"
)

// WithInit names the coderun-init binary: a static Linux executable for the
// engine's architecture, built from cmd/coderun-init. Prepare fails without
// one.
func WithInit(path string) Option {
	return func(e *Engine) { e.initPath = path }
}

// initVolume returns the name of this Engine's volume holding the init,
// creating and filling it the first time, with a container of image (one the
// engine has; never started, and its files never copied into the volume).
// Volumes of earlier processes that nothing uses any more are removed.
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
	own, err := e.enginePlatform(ctx)
	if err != nil {
		return "", err
	}
	if err := checkInitBinary(bin, own); err != nil {
		return "", fmt.Errorf("coderun-init %s: %w", e.initPath, err)
	}
	sum := sha256.Sum256(bin)
	name := "coderun-init-" + hex.EncodeToString(sum[:6]) + "-" + strings.ToLower(rand.Text()[:12])
	labels := map[string]string{LabelInit: name, LabelInstance: e.instance}
	// The volume serves every run of this Engine, not the caller's alone, so
	// installing it is not cut short with the caller's context: the engine
	// may carry out a request its client gave up on, and what it made then
	// would be left behind. A failure removes what was made, by name.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), installTimeout)
	defer cancel()
	if _, err := e.cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Labels: labels}); err != nil {
		e.removeInit(ctx, name)
		return "", engineError(ctx, "create the volume for coderun-init", err)
	}
	if err := e.fillInit(ctx, image, name, bin, sum); err != nil {
		e.removeInit(ctx, name)
		return "", err
	}
	e.initReady = name
	e.removeStaleInits(ctx, name)
	return name, nil
}

// removeInit removes the init volume name and the container that fills it
// (both named name), made or not, ctx ended or not.
func (e *Engine) removeInit(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	e.cli.ContainerRemove(ctx, name, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	e.cli.VolumeRemove(ctx, name, client.VolumeRemoveOptions{Force: true})
}

// fillInit copies bin into volume through a container of image that mounts
// it, then reads it back and compares.
func (e *Engine) fillInit(ctx context.Context, image, volume string, bin []byte, sum [32]byte) error {
	created, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: volume,
		Config: &container.Config{Image: image, Labels: map[string]string{LabelInit: volume, LabelInstance: e.instance},
			Entrypoint: []string{initDir + "/" + initName}},
		HostConfig: &container.HostConfig{NetworkMode: "none", Mounts: []mount.Mount{initMount(volume, false)}},
	})
	if err != nil {
		return engineError(ctx, "create the container that installs coderun-init", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		// RemoveVolumes: the image's own declared volumes, not the init's.
		e.cli.ContainerRemove(rctx, created.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: initName, Mode: 0o555, Size: int64(len(bin)), ModTime: time.Now()}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if _, err := e.cli.CopyToContainer(ctx, created.ID, client.CopyToContainerOptions{DestinationPath: initDir, Content: &buf}); err != nil {
		return engineError(ctx, "install coderun-init", err)
	}
	back, err := e.cli.CopyFromContainer(ctx, created.ID, client.CopyFromContainerOptions{SourcePath: initDir + "/" + initName})
	if err != nil {
		return engineError(ctx, "read coderun-init back", err)
	}
	defer back.Content.Close()
	tr := tar.NewReader(back.Content)
	h, err := tr.Next()
	if err != nil {
		return fmt.Errorf("read coderun-init back: %w", err)
	}
	got := sha256.New()
	if _, err := io.Copy(got, tr); err != nil {
		return fmt.Errorf("read coderun-init back: %w", err)
	}
	if h.Typeflag != tar.TypeReg || h.Mode&0o7777 != 0o555 || !bytes.Equal(got.Sum(nil), sum[:]) {
		return fmt.Errorf("coderun-init in volume %s is not the file written (type %c, mode %o)", volume, h.Typeflag, h.Mode)
	}
	return nil
}

// removeStaleInits removes the init volumes, and the containers that filled
// them, that earlier processes left: a volume a sandbox still uses is kept
// (the engine refuses to remove it), and so is keep.
func (e *Engine) removeStaleInits(ctx context.Context, keep string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	filter := make(client.Filters).Add("label", LabelInit)
	if cs, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter}); err == nil {
		for _, c := range cs.Items {
			// Another process's filling may be under way: only old ones go.
			if c.Labels[LabelInit] != keep && time.Since(time.Unix(c.Created, 0)) > time.Hour {
				e.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
	}
	vs, err := e.cli.VolumeList(ctx, client.VolumeListOptions{Filters: filter})
	if err != nil {
		return
	}
	for _, v := range vs.Items {
		if v.Name != keep && !e.initInUse(ctx, v.Name) {
			if _, err := e.cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsConflict(err) && !cerrdefs.IsNotFound(err) {
				return
			}
		}
	}
}

// initInUse reports whether a container mounts the init volume name, or one
// is filling it: a process that made it moments ago may not have started a
// sandbox yet, so a young volume counts as used.
func (e *Engine) initInUse(ctx context.Context, name string) bool {
	v, err := e.cli.VolumeInspect(ctx, name, client.VolumeInspectOptions{})
	if err != nil {
		return true
	}
	if created, err := time.Parse(time.RFC3339, v.Volume.CreatedAt); err != nil || time.Since(created) < time.Hour {
		return true
	}
	cs, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("volume", name)})
	return err != nil || len(cs.Items) > 0
}

// checkInitBinary checks that bin can run in a sandbox on an engine of
// platform p: a static Linux executable for p's architecture.
func checkInitBinary(bin []byte, p platform) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not a Linux executable: %w", err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Arch]
	switch {
	case p.OS != "linux":
		return fmt.Errorf("the engine runs %s, not linux", p)
	case want == 0 || f.Machine != want:
		return fmt.Errorf("built for %s; the engine runs %s (build it with GOOS=linux GOARCH=%s CGO_ENABLED=0)", f.Machine, p, p.Arch)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("not static: it needs a dynamic loader the image may not have (build it with CGO_ENABLED=0)")
		}
	}
	return nil
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

// initMount is the init's volume at initDir, never filled from an image.
func initMount(volume string, readOnly bool) mount.Mount {
	return mount.Mount{Type: mount.TypeVolume, Source: volume, Target: initDir, ReadOnly: readOnly,
		VolumeOptions: &mount.VolumeOptions{NoCopy: true}}
}
