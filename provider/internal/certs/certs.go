// Package certs issues throw-away certificates for development and tests:
// a CA, a server pair and a client pair with the client-auth usage, the way
// Gatekeeper's webhook certificate is issued.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that can issue leaves.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Pair is a PEM-encoded certificate and key.
type Pair struct {
	CertPEM, KeyPEM []byte
}

// NewCA makes a self-signed CA named cn, valid from now for validity.
func NewCA(cn string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Moat development"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	Groups     []string // the subject's organizations: Kubernetes reads a client's groups from them
	Hosts      []string // DNS names and IP addresses
	Client     bool     // client-auth usage (else server-auth)
	Server     bool     // server-auth usage
	NotBefore  time.Time
	NotAfter   time.Time
}

// Issue signs a leaf certificate.
func (ca *CA) Issue(l Leaf) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: l.Groups},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: certPEM(der), KeyPEM: keyPEM(key)}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte { return certPEM(ca.Cert.Raw) }

// KeyPEM is the CA key in PEM.
func (ca *CA) KeyPEM() []byte { return keyPEM(ca.Key) }

// DevSet is what `moat dev-certs` writes.
type DevSet struct {
	CA     *CA
	Server Pair
	Client Pair
	// NodeCA signs NodeClient, the client certificate of `moat node-scan`:
	// a CA of its own, so that it opens the node-report listener only.
	NodeCA     *CA
	NodeClient Pair
}

// NewDevSet issues a CA, a server pair for localhost, 127.0.0.1, ::1 and
// extra hosts, and a client pair, all valid for validity.
func NewDevSet(extraHosts []string, validity time.Duration) (*DevSet, error) {
	ca, err := NewCA("moat-dev-ca", validity)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Minute)
	srv, err := ca.Issue(Leaf{
		CommonName: "moat-provider",
		Hosts:      append([]string{"localhost", "127.0.0.1", "::1"}, extraHosts...),
		Server:     true,
		NotBefore:  now, NotAfter: now.Add(validity),
	})
	if err != nil {
		return nil, err
	}
	// Gatekeeper's webhook certificate carries both usages; so does ours.
	cli, err := ca.Issue(Leaf{
		CommonName: "gatekeeper-webhook-service.gatekeeper-system.svc",
		Client:     true, Server: true,
		NotBefore: now, NotAfter: now.Add(validity),
	})
	if err != nil {
		return nil, err
	}
	nodeCA, err := NewCA("moat-dev-node-scan-ca", validity)
	if err != nil {
		return nil, err
	}
	node, err := nodeCA.Issue(Leaf{CommonName: "moat-node-scan", Client: true, NotBefore: now, NotAfter: now.Add(validity)})
	if err != nil {
		return nil, err
	}
	return &DevSet{CA: ca, Server: srv, Client: cli, NodeCA: nodeCA, NodeClient: node}, nil
}

// Write stores the set in dir as ca.crt, ca.key, tls.crt, tls.key,
// client.crt, client.key, node-ca.crt, node-client.crt and node-client.key
// (keys mode 0600).
func (s *DevSet) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca.crt", s.CA.CertPEM(), 0o644},
		{"ca.key", s.CA.KeyPEM(), 0o600},
		{"tls.crt", s.Server.CertPEM, 0o644},
		{"tls.key", s.Server.KeyPEM, 0o600},
		{"client.crt", s.Client.CertPEM, 0o644},
		{"client.key", s.Client.KeyPEM, 0o600},
		{"node-ca.crt", s.NodeCA.CertPEM(), 0o644},
		{"node-client.crt", s.NodeClient.CertPEM, 0o644},
		{"node-client.key", s.NodeClient.KeyPEM, 0o600},
	}
	for _, f := range files {
		if err := WriteAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// WriteAtomic writes data to path through a temporary file and a rename, so
// a reader never sees half a file.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k) // never fails for a P-256 key
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
