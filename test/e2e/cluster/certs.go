package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"time"

	"github.com/moat-dev/moat/provider/testenv"
)

// newCA makes a CA valid for a day: longer than any run.
func newCA(cn string) (*testenv.CA, error) { return testenv.NewCA(cn, 24*time.Hour) }

// issue issues l under ca and writes dir/name.crt and dir/name.key.
func issue(ca *testenv.CA, dir, name string, l testenv.Leaf) (certFile, keyFile string, err error) {
	l.NotBefore, l.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour)
	pair, err := ca.Issue(l)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pair.CertPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pair.KeyPEM, 0o600)
}

// newKeyFile writes a new P-256 private key to path: the key service
// account tokens are signed with.
func newKeyFile(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}
