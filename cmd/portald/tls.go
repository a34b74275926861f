package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// tlsConfigs are the TLS settings of a node: the API's, raft's (mutual,
// cluster CA), and the client side used to reach peers (raft, forwarding,
// joining). All nil in plaintext mode.
type tlsConfigs struct {
	api, raftServer, dial *tls.Config
}

func (c *config) tls() (*tlsConfigs, error) {
	if c.TLSCert == "" && c.TLSKey == "" && c.TLSCA == "" {
		if c.TLSClientAuth {
			return nil, errors.New("tls-client-auth: needs --tls-cert, --tls-key and --tls-ca")
		}
		return &tlsConfigs{}, nil
	}
	if c.TLSCert == "" || c.TLSKey == "" || c.TLSCA == "" {
		return nil, errors.New("TLS needs all of --tls-cert, --tls-key and --tls-ca (the CA verifies raft peers)")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls-cert/tls-key: %w", err)
	}
	pem, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls-ca: %s holds no PEM certificate", c.TLSCA)
	}
	out := &tlsConfigs{
		api: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		raftServer: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool},
		dial: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
	}
	if c.TLSClientAuth {
		out.api.ClientAuth = tls.RequireAndVerifyClientCert
		out.api.ClientCAs = pool
	}
	return out, nil
}
