package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ms2m/ms2m/internal/staging"
)

// checkpointLazy dumps the container without its memory pages (post-copy)
// and leaves CRIU serving them to the target's lazy-pages daemon.
//
// It is dumped with --leave-running, and paused (the cgroup freezer)
// first, so it stays frozen whatever CRIU does and the agent alone ends or
// thaws it. Without it CRIU would kill the source itself once the last
// page is served, with its TCP sockets still in repair mode (CRIU takes
// them out of it only for a source it leaves alive): the broker would
// see no close, and keep the source's unacknowledged deliveries on a
// dead connection until its heartbeat timed out.
//
// CRIU's page server takes its port from runc but listens on every
// address (criu/cr-service.c ignores the address of a lazy dump) and
// accepts the first connection from anyone. So runc runs in a network
// namespace of its own (StartInNewNetns), holding only a loopback, and the
// agent takes that one connection itself from inside it (DialInNetns)
// before anything else could: the pages then leave the node only through
// the agent, to the agent the manager named.
func (r Runc) checkpointLazy(ctx context.Context, c Container, st runcState, o Options, ns []string, dir string) (res Result, err error) {
	images := filepath.Join(dir, staging.ImagesDir)
	work := filepath.Join(dir, "work")
	fail := func(err error) (Result, error) {
		_ = os.RemoveAll(r.local(dir))
		return Result{}, err
	}
	start := time.Now()
	if err := r.run(ctx, ns, "pause", c.ID); err != nil {
		return fail(fmt.Errorf("pausing %s for its dump: %w", c, err))
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return fail(errors.Join(err, r.Release(context.WithoutCancel(ctx), c.ID)))
	}
	defer statusR.Close()
	argv := append(append([]string{}, ns...), r.Runc, "--root", r.Root, "checkpoint",
		"--lazy-pages", "--leave-running", "--page-server", "127.0.0.1:"+strconv.Itoa(pageServerPort), "--status-fd", "3",
		"--image-path", images, "--work-path", work, c.ID)
	// Not bound to ctx: it outlives the request, serving the pages.
	cmd := r.hostCommand(context.Background(), argv...)
	cmd.ExtraFiles = []*os.File{statusW}
	setpgid(cmd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := StartInNewNetns(cmd); err != nil {
		statusW.Close()
		return fail(errors.Join(fmt.Errorf("runc checkpoint --lazy-pages: %w", err), r.Release(context.WithoutCancel(ctx), c.ID)))
	}
	statusW.Close()
	dumpLog := r.local(filepath.Join(work, "dump.log"))
	ps := NewPageServer(cmd, "runc checkpoint --lazy-pages", func() string { return lastLines(stderr.String(), 3) + logTail(dumpLog) },
		func() { _ = os.RemoveAll(r.local(dir)) })
	// From here on a failure ends CRIU (which leaves the container alive
	// and frozen) and thaws it.
	abort := func(err error) (Result, error) {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-ps.done
		return Result{}, errors.Join(err, ps.err, r.Release(context.WithoutCancel(ctx), c.ID))
	}
	if err := readStatus(statusR, ps.done, 2*time.Minute); err != nil {
		return abort(fmt.Errorf("lazy dump of %s: %w", c, err))
	}
	conn, err := DialInNetns(ctx, r.local(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)), "127.0.0.1:"+strconv.Itoa(pageServerPort))
	if err != nil {
		return abort(fmt.Errorf("connecting to the page server of %s: %w", c, err))
	}
	ps.Conn = conn
	if derr := r.writeRootfsDiff(st, filepath.Join(dir, staging.RootfsDiffTar)); derr != nil {
		return abort(errors.Join(fmt.Errorf("root file system changes of %s: %w", c, derr), ps.Abort()))
	}
	freeze := time.Since(start)
	archive := r.archivePath(o.ID)
	if err := writeArchive(r.local(archive), r.local(dir), staging.ImagesDir, staging.RootfsDiffTar); err != nil {
		return abort(errors.Join(fmt.Errorf("archiving the dump of %s: %w", c, err), ps.Abort()))
	}
	return Result{Archive: r.local(archive), Freeze: freeze, Held: true, Pages: ps}, nil
}

func (r Runc) hostRootOrSlash() string {
	if r.HostRoot == "" {
		return "/"
	}
	return r.HostRoot
}

// criuBinary is the node's criu, as a host path.
func (r Runc) criuBinary() (string, error) {
	if r.CRIU != "" {
		return r.CRIU, nil
	}
	return FindHostBinary(r.hostRootOrSlash(), "criu")
}

// hostCommand runs a host program on the host's files: chrooted into
// HostRoot, from its root, with the PATH runc gets.
func (r Runc) hostCommand(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + r.path()}
	cmd.Dir = "/"
	if r.HostRoot != "" && r.HostRoot != "/" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: r.HostRoot}
	}
	return cmd
}

// path is the PATH runc gets: runc finds criu on it (runc 1.2 dropped its
// --criu option).
func (r Runc) path() string {
	path := strings.Join(hostPath, ":")
	if r.CRIU != "" {
		path = filepath.Dir(r.CRIU) + ":" + path
	}
	return path
}

// Daemon is a CRIU process the agent keeps on the target node: the
// lazy-pages daemon (post-copy), which serves the restored process's page
// faults from the source's page server and fetches the rest in the
// background, or the page server of a Stream migration, which writes the
// pages the source's CRIU sends. It ends once every page is in.
type Daemon struct {
	cmd  *exec.Cmd
	what string
	done chan struct{}
	err  error
}

// LazyDaemon is CRIU's lazy-pages daemon on the target node.
type LazyDaemon = Daemon

// Wait returns once the daemon has ended: nil when every page arrived.
func (d *Daemon) Wait() error {
	<-d.done
	return d.err
}

// Done is closed when the daemon has ended.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Stop ends the daemon (a migration given up before or during its restore).
func (d *Daemon) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
}

// StartLazyPages starts the lazy-pages daemon for the checkpoint staged
// in localDir (the agent's path of it; CRIU's images in images/), taking pages from the
// page server at the other end of pageServer, and returns once it waits
// for the restore. The restore finds it by the socket it makes in
// dir/work, which must be the restore's --work-path (the runtime handler's
// claim moves dir, never its contents).
func (r Runc) StartLazyPages(localDir string, pageServer *os.File) (*LazyDaemon, error) {
	dir, err := r.hostPathOf(localDir)
	if err != nil {
		return nil, err
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(r.local(work), 0o700); err != nil {
		return nil, err
	}
	return r.startDaemon(pageServer, "lazy-pages", "--page-server",
		"--images-dir", filepath.Join(dir, staging.ImagesDir), "--work-dir", work)
}

// hostPathOf is the host's path of a directory the agent names by its own
// path (under HostRoot).
func (r Runc) hostPathOf(localDir string) (string, error) {
	if r.HostRoot == "" || r.HostRoot == "/" {
		return localDir, nil
	}
	rel, err := filepath.Rel(r.HostRoot, localDir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("%s is not on the host (%s)", localDir, r.HostRoot)
	}
	return "/" + rel, nil
}

// startDaemon starts criu args with sock as its page server connection,
// and returns once it says it is ready.
func (r Runc) startDaemon(sock *os.File, args ...string) (*Daemon, error) {
	cmd, statusR, out, err := r.startCRIU(sock, args...)
	if err != nil {
		return nil, err
	}
	defer statusR.Close()
	d := &Daemon{cmd: cmd, what: "criu " + args[0], done: make(chan struct{})}
	go func() {
		if err := cmd.Wait(); err != nil {
			d.err = fmt.Errorf("%s: %w: %s", d.what, err, lastLines(out.String(), criuLogLines))
		}
		close(d.done)
	}()
	if err := readStatus(statusR, d.done, 30*time.Second); err != nil {
		d.Stop()
		return nil, errors.Join(fmt.Errorf("%s: %w", d.what, err), d.err)
	}
	return d, nil
}

// Capability is whether a node can do something, and why or why not.
type Capability struct {
	OK     bool
	Reason string
}

// minPipeMaxSize is the fs.pipe-max-size a lazy dump needs: CRIU grows
// the pipes holding the pages to it, and an agent without
// CAP_SYS_RESOURCE cannot go past the limit ("page-pipe: tee ...
// Operation not permitted").
const minPipeMaxSize = 4 << 20

// MemoryCapabilities probes what the node's CRIU and kernel allow beyond a
// plain dump: post-copy (a lazy dump served to a lazy-pages daemon,
// userfaultfd in the kernel) and pre-copy (the kernel's soft-dirty
// tracking of written pages).
func (r Runc) MemoryCapabilities(ctx context.Context) (lazy, dirty Capability) {
	check := func(feature string) error {
		criu, err := r.criuBinary()
		if err != nil {
			return err
		}
		out, err := r.hostCommand(ctx, criu, "check", "--feature", feature).CombinedOutput()
		if err != nil {
			return fmt.Errorf("criu check --feature %s: %s", feature, lastLines(string(out), 2))
		}
		return nil
	}
	lazy = Capability{OK: true, Reason: "CRIU serves lazy dumps and the kernel has userfaultfd"}
	if err := check("uffd-noncoop"); err != nil {
		lazy = Capability{Reason: err.Error()}
	} else if b, err := os.ReadFile(r.local("/proc/sys/fs/pipe-max-size")); err != nil {
		lazy = Capability{Reason: "reading fs.pipe-max-size: " + err.Error()}
	} else if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n < minPipeMaxSize {
		lazy = Capability{Reason: fmt.Sprintf("fs.pipe-max-size is %d; a lazy dump needs at least %d (sysctl -w fs.pipe-max-size=%d)", n, minPipeMaxSize, minPipeMaxSize)}
	}
	dirty = Capability{OK: true, Reason: "the kernel tracks dirty memory (soft-dirty)"}
	if err := check("mem_dirty_track"); err != nil {
		dirty = Capability{Reason: "the kernel does not track dirty memory (no soft-dirty bits): " + err.Error()}
	}
	return lazy, dirty
}

// serveDumpPages is post-copy from a source that runs on (a ShadowPod
// source): its archive holds the dump in dir without the pages a lazy
// restore takes later (WriteLazyImages), and CRIU's page server serves
// those from the dump, which stays in dir (tmpfs) until it ends. The page
// server speaks only through a socket pair whose other end is the
// agent's: nothing else on the node can ask it for the workload's memory.
func (r Runc) serveDumpPages(c Container, dir, archive string) (Result, error) {
	fail := func(err error) (Result, error) {
		_ = os.RemoveAll(r.local(dir))
		return Result{}, err
	}
	ship := filepath.Join(dir, "ship")
	if _, err := WriteLazyImages(r.local(filepath.Join(dir, staging.ImagesDir)), r.local(filepath.Join(ship, staging.ImagesDir))); err != nil {
		return fail(fmt.Errorf("the dump of %s without its lazy pages: %w", c, err))
	}
	if err := os.Link(r.local(filepath.Join(dir, staging.RootfsDiffTar)), r.local(filepath.Join(ship, staging.RootfsDiffTar))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(err)
	}
	if err := writeArchive(r.local(archive), r.local(ship), staging.ImagesDir, staging.RootfsDiffTar); err != nil {
		return fail(fmt.Errorf("archiving the dump of %s: %w", c, err))
	}
	_ = os.RemoveAll(r.local(ship))

	criuEnd, ours, err := SocketPair()
	if err != nil {
		return fail(err)
	}
	defer criuEnd.Close()
	work := filepath.Join(dir, "work")
	cmd, statusR, out, err := r.startCRIU(criuEnd, "page-server", "--lazy-pages",
		"--images-dir", filepath.Join(dir, staging.ImagesDir), "--work-dir", work)
	if err != nil {
		ours.Close()
		return fail(err)
	}
	defer statusR.Close()
	ps := NewPageServer(cmd, "criu page-server", func() string { return ": " + lastLines(out.String(), criuLogLines) },
		func() { _ = os.RemoveAll(r.local(dir)) })
	ps.Conn = ours
	if err := readStatus(statusR, ps.done, 30*time.Second); err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-ps.done
		ours.Close()
		return Result{}, errors.Join(fmt.Errorf("serving the pages of %s: %w", c, err), ps.err)
	}
	return Result{Archive: r.local(archive), Pages: ps}, nil
}

// startCRIU starts the host's criu with args, sock as the page server
// connection it is given (--ps-socket) and a pipe for the byte it writes
// once it serves (--status-fd), in a process group of its own. Its log
// (errors and warnings) goes to its standard output, kept with its
// standard error in the returned builder: a log file in its work
// directory would move with a staged checkpoint's claim, and go with its
// cleanup, before anyone read why it failed.
func (r Runc) startCRIU(sock *os.File, args ...string) (*exec.Cmd, *os.File, *strings.Builder, error) {
	criu, err := r.criuBinary()
	if err != nil {
		return nil, nil, nil, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	argv := append(append([]string{criu}, args...), "--ps-socket", "3", "--status-fd", "4", "--log-file", "-")
	cmd := r.hostCommand(context.Background(), argv...)
	cmd.ExtraFiles = []*os.File{sock, statusW}
	setpgid(cmd)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out // the same writer: written by one goroutine at a time
	err = cmd.Start()
	statusW.Close()
	if err != nil {
		statusR.Close()
		return nil, nil, nil, fmt.Errorf("criu %s: %w", args[0], err)
	}
	return cmd, statusR, out, nil
}

// criuLogLines is how much of CRIU's log a failure quotes.
const criuLogLines = 6

// SocketPair is a connected pair of Unix sockets: a file to hand to CRIU
// and the other end as a connection, for the agent. Nothing else on the
// node can reach a socket pair, unlike a port.
func SocketPair() (*os.File, net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	theirs := os.NewFile(uintptr(fds[0]), "criu-end")
	oursFile := os.NewFile(uintptr(fds[1]), "agent-end")
	ours, err := net.FileConn(oursFile)
	oursFile.Close()
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return theirs, ours, nil
}
