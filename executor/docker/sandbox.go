package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

var _ executor.Executor = (*Engine)(nil)

// Labels on every sandbox, so that the service tells its own containers (and
// those a crashed worker left behind) from everything else on the engine.
const (
	LabelRunID    = "coderun.run-id"
	LabelManaged  = "coderun.managed"
	LabelInstance = "coderun.instance" // see WithInstance
)

// The parts of the sandbox profile no runtime configures.
const (
	// DefaultUser runs programs as nobody:nogroup unless the spec names a user.
	DefaultUser = "65534:65534"
	// maxOpenFiles bounds the file descriptors a program holds (RLIMIT_NOFILE).
	maxOpenFiles = 256
	// maxFileBytes bounds each file a program writes (RLIMIT_FSIZE). The
	// workspace and /tmp are bounded as wholes by their tmpfs sizes, and
	// stdout and stderr by Limits.OutputBytes.
	maxFileBytes = 64 << 20
	// cleanupTimeout bounds removing a sandbox, whatever the caller's context.
	cleanupTimeout = 30 * time.Second
)

// containerName is the name of run runID's container: one per run, so a second
// Prepare of the same run fails instead of running it twice.
func containerName(runID string) string { return "coderun-" + runID }

// workspaceMiB is the size of a run's workspace: half its memory. What a
// program writes there is charged to its memory too, so a full workspace
// says ENOSPC before the memory limit would kill the program.
func workspaceMiB(l coderun.Limits) int { return max(l.MemoryMiB/2, 8) }

// Prepare creates the container for spec.RunID in the sandbox profile. Its
// workspace is a tmpfs (workspaceMiB), and it starts with coderun-init, which
// Run hands spec.Files before the program's input. The container is created
// stopped; Run starts it.
func (e *Engine) Prepare(ctx context.Context, spec executor.Spec) (executor.Sandbox, error) {
	if spec.RunID == "" {
		return nil, errors.New("prepare sandbox: no run id")
	}
	user, err := parseUser(spec.User)
	if err != nil {
		return nil, fmt.Errorf("prepare sandbox for run %s: %w", spec.RunID, err)
	}
	env, err := environment(spec.Env)
	if err != nil {
		return nil, fmt.Errorf("prepare sandbox for run %s: %w", spec.RunID, err)
	}
	files, err := workspaceArchive(spec.Files, user, time.Now())
	if err != nil {
		return nil, fmt.Errorf("prepare sandbox for run %s: %w", spec.RunID, err)
	}
	img, err := e.localImage(ctx, spec.Image)
	if err != nil {
		return nil, fmt.Errorf("prepare sandbox for run %s: %w", spec.RunID, err)
	}
	// The command is the whole argv: an image's ENTRYPOINT is not prepended.
	argv := spec.Command
	if len(argv) == 0 {
		argv = img.command()
	}
	argv = append(slices.Clip(argv), spec.Args...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("prepare sandbox for run %s: neither the runtime nor its image names a command", spec.RunID)
	}
	initVolume, err := e.initVolume(ctx, img.id)
	if err != nil {
		return nil, fmt.Errorf("prepare sandbox for run %s: %w", spec.RunID, err)
	}
	limits := withDefaults(spec.Limits)

	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = make(map[string]string, 3)
	}
	// Ours last: a spec cannot pass its sandbox off as another run's.
	labels[LabelRunID] = spec.RunID
	labels[LabelManaged] = "true"
	labels[LabelInstance] = e.instance

	config := &container.Config{
		Image:      img.id,
		Env:        env,
		WorkingDir: executor.WorkDir,
		User:       user.String(),
		Labels:     labels,
		// Stdin stays open until Run's attachment half-closes it, so the
		// program reads exactly spec.Stdin and then EOF.
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
		OpenStdin:    true,
		StdinOnce:    true,
		Entrypoint:   append([]string{initDir + "/" + initName, "--"}, argv...),
		// An image's health check would have the engine run commands in
		// the sandbox, outside its init and on the host's CPU.
		Healthcheck: &container.HealthConfig{Test: []string{"NONE"}},
	}
	hc := e.hostConfig(spec.Network && e.allowNetwork, limits)
	hc.Mounts = append(hc.Mounts, initMount(initVolume, true))
	hc.Tmpfs[executor.WorkDir] = fmt.Sprintf("size=%dm,uid=%d,gid=%d,mode=0755,exec,nosuid,nodev", workspaceMiB(limits), user.uid, user.gid)
	// A volume the image declares would be an unbounded directory on the
	// engine's disk: it gets a tmpfs like /tmp's instead. The engine gives a
	// volume declared by a relative path a directory on its disk all the
	// same (and takes no tmpfs for it), and one at / cannot start, so such
	// images are not run.
	for _, dir := range img.volumes {
		switch {
		case !path.IsAbs(dir):
			return nil, fmt.Errorf("%w: the image declares volume %q by a relative path; sandboxes mount an image's volumes only at absolute paths", executor.ErrImageUnsupported, dir)
		case path.Clean(dir) == "/":
			return nil, fmt.Errorf("%w: the image declares a volume at /, over its whole filesystem", executor.ErrImageUnsupported)
		}
		dir = path.Clean(dir)
		if _, taken := hc.Tmpfs[dir]; !taken && dir != initDir {
			hc.Tmpfs[dir] = hc.Tmpfs["/tmp"]
		}
	}
	// Not cut short with ctx: the engine may make a container its client
	// gave up waiting for, after the caller's Cleanup looked for it. Whatever
	// this returns, the container is there or not, and Cleanup finds it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engineTimeout)
	defer cancel()
	created, err := e.cli.ContainerCreate(cctx, client.ContainerCreateOptions{
		Name:       containerName(spec.RunID),
		Config:     config,
		HostConfig: hc,
	})
	if cerrdefs.IsNotFound(err) { // removed since localImage found it
		return nil, fmt.Errorf("create sandbox for run %s: %w: %w", spec.RunID, executor.ErrImageUnavailable, err)
	}
	if err != nil {
		return nil, engineError(cctx, "create sandbox for run "+spec.RunID, err)
	}
	input := append(initInput(files), spec.Stdin...)
	return &sandbox{cli: e.cli, id: created.ID, runID: spec.RunID, stdin: input, limits: limits}, nil
}

// hostConfig is the sandbox profile (DESIGN.md "Execution").
func (e *Engine) hostConfig(network bool, limits coderun.Limits) *container.HostConfig {
	memory := int64(limits.MemoryMiB) << 20
	pids := int64(limits.Pids)
	init := true
	hc := &container.HostConfig{
		NetworkMode:    "none",
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": fmt.Sprintf("rw,noexec,nosuid,nodev,size=%d", e.tmpfsBytes)},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		// An init reaps what the program leaves behind and passes on signals.
		Init:    &init,
		Runtime: e.ociRuntime,
		// Output reaches the service through the attachment alone: no log of
		// untrusted output grows on the engine's disk.
		LogConfig: container.LogConfig{Type: "none"},
		// When the host runs short of memory, a sandbox goes first, never
		// the engine, the database or the service.
		OomScoreAdj: 1000,
		Resources: container.Resources{
			Memory:     memory,
			MemorySwap: memory, // no swap on top
			NanoCPUs:   int64(limits.CPUs * 1e9),
			PidsLimit:  &pids,
			Ulimits: []*container.Ulimit{
				{Name: "nofile", Soft: maxOpenFiles, Hard: maxOpenFiles},
				{Name: "fsize", Soft: maxFileBytes, Hard: maxFileBytes},
				// A backstop for the wall-time limit, which the worker
				// enforces: a process outliving its worker still stops.
				{Name: "cpu", Soft: cpuSeconds(limits), Hard: cpuSeconds(limits) + 1},
			},
		},
	}
	if network {
		hc.NetworkMode = "" // the engine's default network
	}
	return hc
}

// cpuSeconds is the CPU time (RLIMIT_CPU) each process of a sandbox may use:
// more than the wall-time limit allows at the sandbox's CPUs, so that it never
// ends a run the worker would not have.
func cpuSeconds(l coderun.Limits) int64 {
	return int64(math.Ceil(float64(l.TimeoutSeconds)*max(l.CPUs, 1))) + 5
}

// withDefaults fills the limits a spec leaves at zero from the defaults, so
// that no sandbox ever runs unbounded.
func withDefaults(l coderun.Limits) coderun.Limits {
	d := coderun.DefaultLimits
	return coderun.Limits{
		TimeoutSeconds: orDefault(l.TimeoutSeconds, d.TimeoutSeconds),
		MemoryMiB:      orDefault(l.MemoryMiB, d.MemoryMiB),
		CPUs:           orDefault(l.CPUs, d.CPUs),
		Pids:           orDefault(l.Pids, d.Pids),
		OutputBytes:    orDefault(l.OutputBytes, d.OutputBytes),
	}
}

// cmpOr is cmp.Or for limits: a value not above zero is unset.
func orDefault[T int | int64 | float64](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// image is what a sandbox needs of the engine's image.
type image struct {
	id              string
	entrypoint, cmd []string
	volumes         []string // the directories it declares as volumes
}

// command is the argv the image runs by default.
func (img image) command() []string {
	return append(append([]string{}, img.entrypoint...), img.cmd...)
}

// localImage returns the engine's image for ref, which is name@digest as
// validated or an image ID. A local-only image validated by its ID is not
// known under name@ID, so that ID is tried too. It never pulls.
func (e *Engine) localImage(ctx context.Context, ref string) (image, error) {
	img, err := e.cli.ImageInspect(ctx, ref)
	if _, digest, pinned := strings.Cut(ref, "@"); cerrdefs.IsNotFound(err) && pinned {
		img, err = e.cli.ImageInspect(ctx, digest)
	}
	switch {
	case cerrdefs.IsNotFound(err), cerrdefs.IsInvalidArgument(err):
		return image{}, fmt.Errorf("%w: the engine has no image %s", executor.ErrImageUnavailable, ref)
	case err != nil:
		return image{}, engineError(ctx, "inspect image "+ref, err)
	}
	out := image{id: img.ID}
	if c := img.Config; c != nil {
		out.entrypoint, out.cmd = c.Entrypoint, c.Cmd
		out.volumes = slices.Sorted(maps.Keys(c.Volumes))
	}
	return out, nil
}

// runUser is the numeric uid and gid a program runs as.
type runUser struct{ uid, gid uint32 }

func (u runUser) String() string { return fmt.Sprintf("%d:%d", u.uid, u.gid) }

// parseUser reads a spec's "uid:gid", refusing root. Numbers only: the files
// delivered to the workspace are owned by them, and a name would mean
// something else in every image.
func parseUser(s string) (runUser, error) {
	if s == "" {
		s = DefaultUser
	}
	us, gs, ok := strings.Cut(s, ":")
	uid, uerr := strconv.ParseUint(us, 10, 32)
	gid, gerr := strconv.ParseUint(gs, 10, 32)
	if !ok || uerr != nil || gerr != nil {
		return runUser{}, fmt.Errorf("user %q is not a numeric uid:gid", s)
	}
	if uid == 0 || gid == 0 {
		return runUser{}, fmt.Errorf("user %q is root: programs never run as root", s)
	}
	return runUser{uid: uint32(uid), gid: uint32(gid)}, nil
}

// environment turns a spec's variables into the engine's KEY=value list, in
// a stable order.
func environment(vars map[string]string) ([]string, error) {
	env := make([]string, 0, len(vars))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("environment variable name %q is not valid", k)
		}
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

// workspaceArchive is the tar coderun-init extracts into the workspace:
// files, and the directories above them, which the init (running as the run
// user) creates, so the program can change and add to them. No files, no
// archive.
func workspaceArchive(files []executor.File, user runUser, at time.Time) (*bytes.Buffer, error) {
	if len(files) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	kinds := make(map[string]byte) // path → tar.TypeDir or tar.TypeReg, as written
	for _, f := range files {
		name, err := workspacePath(f.Path)
		if err != nil {
			return nil, err
		}
		if _, taken := kinds[name]; taken {
			return nil, fmt.Errorf("file %q is given twice", f.Path)
		}
		parents := strings.Split(name, "/")
		for i := 1; i < len(parents); i++ {
			dir := strings.Join(parents[:i], "/")
			switch kinds[dir] {
			case tar.TypeDir:
				continue
			case tar.TypeReg:
				return nil, fmt.Errorf("file %q is inside file %q", f.Path, dir)
			}
			kinds[dir] = tar.TypeDir
			if err := tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755,
				Uid: int(user.uid), Gid: int(user.gid), ModTime: at,
			}); err != nil {
				return nil, err
			}
		}
		kinds[name] = tar.TypeReg
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: int64(len(f.Data)),
			Uid: int(user.uid), Gid: int(user.gid), ModTime: at,
		}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	return &buf, tw.Close()
}

// workspacePath checks that a file's path names a file inside the workspace
// and returns it cleaned.
func workspacePath(p string) (string, error) {
	clean := path.Clean(p)
	if p == "" || path.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("file path %q does not name a file inside %s", p, executor.WorkDir)
	}
	return clean, nil
}

// Cleanup removes run runID's container and its workspace volume. It runs on
// its own timeout, not ctx's cancellation: a cancelled run is cleaned up too.
func (e *Engine) Cleanup(ctx context.Context, runID string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	name := containerName(runID)
	_, err := e.cli.ContainerRemove(ctx, name, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if cerrdefs.IsConflict(err) {
		// Most likely another Cleanup of the run is under way (an orphan
		// sweep, a retry): done when the container is gone.
		removed := e.cli.ContainerWait(ctx, name, client.ContainerWaitOptions{Condition: container.WaitConditionRemoved})
		select {
		case <-removed.Result:
			err = nil
		case werr := <-removed.Error:
			if cerrdefs.IsNotFound(werr) {
				err = nil
			}
		}
	}
	if err != nil && !cerrdefs.IsNotFound(err) {
		return engineError(ctx, "remove the sandbox of run "+runID, err)
	}
	return nil
}

// Sandboxes lists the run ids of this instance's sandboxes on the engine (see
// WithInstance), in any state.
func (e *Engine) Sandboxes(ctx context.Context) ([]string, error) {
	filters := make(client.Filters).Add("label", LabelManaged+"=true").Add("label", LabelInstance+"="+e.instance)
	list, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
	if err != nil {
		return nil, engineError(ctx, "list sandboxes", err)
	}
	var runIDs []string
	for _, c := range list.Items {
		if id := c.Labels[LabelRunID]; id != "" {
			runIDs = append(runIDs, id)
		}
	}
	return runIDs, nil
}

// engineError reports a failed request to the engine. It is ErrUnavailable
// unless ctx ended or the engine refused the request itself (a spec it does
// not accept, a run prepared twice): trying again later would not help.
func engineError(ctx context.Context, op string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case cerrdefs.IsInvalidArgument(err), cerrdefs.IsConflict(err), cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, executor.ErrUnavailable, err)
}
