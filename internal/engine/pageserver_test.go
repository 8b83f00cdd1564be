package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func request(cmd uint32) []byte {
	b := make([]byte, RequestSize)
	binary.LittleEndian.PutUint32(b, cmd)
	return b
}

// The agent relays the lazy-pages daemon's requests to CRIU whole. The
// daemon's close request ends the relay as a finished transfer; a stream
// cut short (a broken link) is never passed on as an end, which CRIU would
// take for a finished transfer.
func TestCopyRequestsTellsAFinishedTransferFromACutOne(t *testing.T) {
	const get = 7 // PS_IOV_GET
	for _, c := range []struct {
		name       string
		sent       []byte
		wantClosed bool
	}{
		{"close request", append(append(request(get), request(get)...), request(psIOVClose)...), true},
		{"forced close request", append(request(get), request(psIOVForceClose)...), true},
		// the type bits above the command do not hide a close
		{"close with type bits", request(psIOVClose | 1<<16), true},
		{"cut between requests", append(request(get), request(get)...), false},
		{"cut inside a request", append(request(get), request(get)[:10]...), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			criu, agent := net.Pipe()
			ps := &PageServer{Conn: agent}
			got := make(chan []byte, 1)
			go func() {
				var b bytes.Buffer
				_ = criu.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(&b, criu)
				got <- b.Bytes()
			}()
			closed, n, err := ps.CopyRequests(bytes.NewReader(c.sent))
			_ = agent.Close()
			relayed := <-got
			if closed != c.wantClosed {
				t.Fatalf("closed = %v (err %v), want %v", closed, err, c.wantClosed)
			}
			whole := len(c.sent) / RequestSize * RequestSize
			if !bytes.Equal(relayed, c.sent[:whole]) || n != int64(whole) {
				t.Errorf("relayed %d bytes (counted %d), want the %d of the whole requests", len(relayed), n, whole)
			}
			if !c.wantClosed && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("a cut stream ends with %v, want an unexpected EOF", err)
			}
		})
	}
}
