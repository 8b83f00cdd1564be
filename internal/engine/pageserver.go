package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// PageServer is what a post-copy checkpoint leaves running on the source
// node: CRIU serving the container's memory pages to one lazy-pages daemon
// on the target node. For a held source it is the lazy dump itself,
// holding the frozen container (which stays frozen after, for the agent
// to end or, rolled back, to thaw), and Conn the one connection it
// accepts, taken by the agent at once inside CRIU's own network namespace
// (see checkpointLazy). For a source that runs on, it is a page server
// reading the dump (see serveDumpPages), and Conn the agent's end of the
// socket pair it serves.
type PageServer struct {
	Conn net.Conn
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// Page server protocol (CRIU's criu/page-xfer.c): a client sends
// fixed-size requests, struct page_server_iov {u32 cmd; u64 nr_pages, vaddr,
// dst_id} (32 bytes with the padding after cmd); the lazy-pages daemon sends
// only PS_IOV_GET and, when it has every page, PS_IOV_FORCE_CLOSE (or
// PS_IOV_CLOSE).
const (
	psRequestSize      = 32
	psCmdMask          = 1<<16 - 1
	psIOVClose         = 0x1023
	psIOVForceClose    = 0x1024
	psCmdUnknown       = 0xfffe // no command: CRIU fails the dump on it
	pageServerPort     = 27000  // inside CRIU's own network namespace
	pageServerPatience = 10 * time.Second
)

// IsClose says whether a page server request ends the transfer: the
// daemon has every page, and CRIU may end the source.
func IsClose(req []byte) bool {
	if len(req) < 4 {
		return false
	}
	cmd := binary.LittleEndian.Uint32(req) & psCmdMask
	return cmd == psIOVClose || cmd == psIOVForceClose
}

// RequestSize is the size of one page server request.
const RequestSize = psRequestSize

// Wait returns once CRIU has ended: nil when it served every page and
// ended the source.
func (p *PageServer) Wait() error {
	<-p.done
	return p.err
}

// Done is closed when CRIU has ended.
func (p *PageServer) Done() <-chan struct{} { return p.done }

// Abort makes CRIU give up serving, which leaves the container alive (and,
// paused by the engine, still frozen for the engine's Release to thaw).
// CRIU takes a connection closed without a close request as a finished
// transfer; it is sent a request with no command instead, which it
// refuses, so that its end says the pages were not all served. If it does
// not end within its patience, it is killed.
func (p *PageServer) Abort() error {
	p.once.Do(func() {
		req := make([]byte, psRequestSize)
		binary.LittleEndian.PutUint32(req, psCmdUnknown)
		_ = p.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = p.Conn.Write(req)
	})
	select {
	case <-p.done:
	case <-time.After(pageServerPatience):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	_ = p.Conn.Close()
	return nil
}

// NewPageServer follows cmd (what, in its errors), started in a process
// group of its own, which runs a page server; the caller sets Conn. after
// runs once cmd has ended; logTail adds to the error of a failed end.
func NewPageServer(cmd *exec.Cmd, what string, logTail func() string, after func()) *PageServer {
	p := &PageServer{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%s: %w%s", what, err, logTail())
		}
		p.err = err
		close(p.done)
		if after != nil {
			after()
		}
	}()
	return p
}

// CopyRequests copies page requests from the lazy-pages daemon (src) to
// CRIU whole, and says whether the transfer ended with the daemon's close
// request. A stream cut short (a broken link) is not passed on as an end,
// which CRIU would take for a finished transfer; the caller Aborts.
func (p *PageServer) CopyRequests(src io.Reader) (closed bool, n int64, err error) {
	buf := make([]byte, psRequestSize)
	for {
		if _, err := io.ReadFull(src, buf); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return false, n, err
		}
		if _, err := p.Conn.Write(buf); err != nil {
			return false, n, err
		}
		n += psRequestSize
		if IsClose(buf) {
			return true, n, nil
		}
	}
}

// setpgid runs a command in a process group of its own, so that it can be
// killed with the CRIU it starts.
func setpgid(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// readStatus waits for the one byte CRIU writes to its status fd once it
// serves, or for the command to end first.
func readStatus(r *os.File, done <-chan struct{}, timeout time.Duration) error {
	got := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := r.Read(b)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("CRIU's status: %w", err)
		}
		return nil
	case <-done:
		return errors.New("CRIU ended before it served the pages")
	case <-time.After(timeout):
		return fmt.Errorf("CRIU did not serve the pages within %s", timeout)
	}
}
