package agentclient

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// The side that accepted a page stream detects a dead link as the side
// that dialled it does.
func TestTunePageStream(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dialed, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	if err := TunePageStream(accepted); err != nil {
		t.Fatal(err)
	}
	rc, err := accepted.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var timeout, keepalive int
	var serr error
	_ = rc.Control(func(fd uintptr) {
		if timeout, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); serr == nil {
			keepalive, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		}
	})
	if serr != nil {
		t.Fatal(serr)
	}
	if timeout != int(pageStreamLinkTimeout.Milliseconds()) || keepalive != 1 {
		t.Errorf("TCP_USER_TIMEOUT %d ms, SO_KEEPALIVE %d; want %d ms and 1", timeout, keepalive, pageStreamLinkTimeout.Milliseconds())
	}

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := TunePageStream(a); err == nil {
		t.Error("a pipe was taken for a TCP connection")
	}
}
