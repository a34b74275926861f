package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tlsStream is raft's stream layer over mutual TLS: both sides present a
// certificate signed by the cluster CA, so a node without one can neither
// join the conversation nor replicate.
type tlsStream struct {
	net.Listener
	advertise net.Addr
	dial      *tls.Config
}

var _ raft.StreamLayer = (*tlsStream)(nil)

func newTLSStream(bind string, server, client *tls.Config) (*tlsStream, error) {
	if server == nil || client == nil {
		return nil, errors.New("raft TLS needs both a server and a client configuration")
	}
	ln, err := tls.Listen("tcp", bind, server)
	if err != nil {
		return nil, err
	}
	return &tlsStream{Listener: ln, advertise: ln.Addr(), dial: client}, nil
}

// Dial implements raft.StreamLayer.
func (t *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(addr), t.dial)
	if err != nil {
		return nil, fmt.Errorf("raft TLS dial %s: %w", addr, err)
	}
	return c, nil
}

// Addr implements net.Listener (the advertised address).
func (t *tlsStream) Addr() net.Addr { return t.advertise }
