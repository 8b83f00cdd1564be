package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// DialInNetns connects to addr from inside the network namespace at nsPath
// (a /proc/PID/ns/net), after bringing its loopback up. The socket is made
// in that namespace and keeps to it; the caller's thread is put back.
//
// This is how the agent reaches a CRIU page server that listens on every
// address of a namespace holding nothing but a loopback: only a process
// allowed to enter that namespace (root on the node) can connect.
func DialInNetns(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	var c net.Conn
	err := onNetnsThread(func() error {
		ns, err := os.Open(nsPath)
		if err != nil {
			return err
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering %s: %w", nsPath, err)
		}
		return nil
	}, func() (err error) {
		c, err = dialLoopback(ctx, addr)
		return err
	})
	if err != nil && c != nil {
		c.Close()
		c = nil
	}
	return c, err
}

// onNetnsThread runs do on a locked thread that enter has moved into
// another network namespace (a failing enter leaves it where it was), and
// puts the thread back in its own namespace afterwards. A thread that
// could not be put back is never unlocked: Go ends it with its goroutine
// rather than run anything else in the wrong namespace.
func onNetnsThread(enter, do func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer back.Close()
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = do()
		if rerr := unix.Setns(int(back.Fd()), unix.CLONE_NEWNET); rerr != nil {
			errc <- errors.Join(err, fmt.Errorf("returning to the caller's network namespace: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// dialLoopback brings the current namespace's loopback up and dials addr
// until it answers (the listener may be a moment behind its readiness
// note) or ctx ends. It runs on the locked thread: every socket it makes
// belongs to the namespace the thread is in.
func dialLoopback(ctx context.Context, addr string) (net.Conn, error) {
	if err := loopbackUp(); err != nil {
		return nil, err
	}
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to %s: %w", addr, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing the loopback up: %w", err)
	}
	return nil
}

// StartInNewNetns starts cmd in a network namespace of its own holding
// only a loopback, up (CRIU's kernel probes need one). The namespace is
// made on a locked thread, which forks the command (onNetnsThread).
func StartInNewNetns(cmd *exec.Cmd) error {
	_, err := listenAndStartInNewNetns(cmd, "")
	return err
}

// listenAndStartInNewNetns is StartInNewNetns listening on addr first
// ("": not), in the new namespace: only cmd (or root on the node,
// entering the namespace) can connect.
func listenAndStartInNewNetns(cmd *exec.Cmd, addr string) (net.Listener, error) {
	var l net.Listener
	err := onNetnsThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("a network namespace of its own: %w", err)
		}
		return nil
	}, func() error {
		if err := loopbackUp(); err != nil {
			return err
		}
		if addr != "" {
			var err error
			if l, err = net.Listen("tcp", addr); err != nil {
				return err
			}
		}
		if err := cmd.Start(); err != nil {
			if l != nil {
				l.Close()
			}
			return err
		}
		return nil
	})
	return l, err
}
