// Command coderun-init is the first program of every sandbox. It receives the
// run's files on its stdin, writes them into the workspace (a size-limited
// tmpfs, so that what a program writes there is bounded and never reaches
// the engine's disk), then becomes the run's program, whose stdin is the rest
// of its own.
//
//	coderun-init -- PROGRAM [ARG...]
//
// Stdin starts with the files: an 8-byte big-endian length, then a tar of
// exactly that many bytes holding directories and regular files under
// relative paths. The executor mounts it read-only into each sandbox; it must
// be a static Linux binary (CGO_ENABLED=0). It exits 127, saying why on
// stderr, when the files cannot be written or the program cannot be found.
package main

import (
	"archive/tar"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// workDir is where the files go and the program starts (executor.WorkDir).
const workDir = "/workspace"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "coderun-init:", err)
		os.Exit(127)
	}
}

func run(args []string) error {
	if len(args) < 2 || args[0] != "--" {
		return errors.New("usage: coderun-init -- PROGRAM [ARG...]")
	}
	// os.Stdin is unbuffered: exactly the files are read, and the program
	// inherits the descriptor at the first byte of its own input.
	var n uint64
	if err := binary.Read(os.Stdin, binary.BigEndian, &n); err != nil {
		return fmt.Errorf("read the files' length: %w", err)
	}
	files := &io.LimitedReader{R: os.Stdin, N: int64(n)}
	if err := extract(tar.NewReader(files)); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, files); err != nil {
		return fmt.Errorf("read the files: %w", err)
	}
	program, err := exec.LookPath(args[1])
	if err != nil {
		return err
	}
	return syscall.Exec(program, args[1:], os.Environ())
}

// extract writes the archive's directories and regular files under workDir.
func extract(tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the files: %w", err)
		}
		name := path.Clean(strings.TrimSuffix(h.Name, "/"))
		if path.IsAbs(name) || name == "." || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("file %q is not inside %s", h.Name, workDir)
		}
		target := filepath.Join(workDir, filepath.FromSlash(name))
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, mode|0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
		default:
			return fmt.Errorf("file %q is neither a directory nor a regular file", h.Name)
		}
	}
}
