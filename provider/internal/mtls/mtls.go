// Package mtls serves TLS 1.3 with a required client certificate, and
// reloads the server certificate, its key and the client CA when their files
// change, without a restart.
package mtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/moat-dev/moat/provider/internal/metrics"
)

// Files names the PEM files the server reads.
type Files struct {
	Cert, Key, ClientCA string
}

type material struct {
	cert     *tls.Certificate
	clientCA *x509.CertPool
	raw      [3][]byte // file contents, to notice changes
}

// Reloader holds the current certificate material.
type Reloader struct {
	files   Files
	cur     atomic.Pointer[material]
	log     *slog.Logger
	metrics *metrics.Metrics
}

// NewReloader returns a Reloader; nothing is loaded until Load or Watch.
func NewReloader(f Files, log *slog.Logger, m *metrics.Metrics) *Reloader {
	// Export every refusal reason at zero so alerts can use rate() at once.
	for _, r := range []string{ReasonNoCert, ReasonUntrusted, ReasonExpired, ReasonWrongUsage, ReasonTLSVersion, ReasonNotLoaded, ReasonOtherClient} {
		m.HandshakeFailures.WithLabelValues(r)
	}
	return &Reloader{files: f, log: log, metrics: m}
}

// Ready reports whether a certificate and client CA are loaded.
func (r *Reloader) Ready() bool { return r.cur.Load() != nil }

// Load reads the files and, if they changed and are valid, swaps them in.
// Invalid files (for example a certificate written before its key during a
// rotation) keep the previous material and return the error.
func (r *Reloader) Load() error {
	var raw [3][]byte
	for i, p := range []string{r.files.Cert, r.files.Key, r.files.ClientCA} {
		b, err := os.ReadFile(p)
		if err != nil {
			return r.failed(err)
		}
		raw[i] = b
	}
	if old := r.cur.Load(); old != nil && bytes.Equal(old.raw[0], raw[0]) &&
		bytes.Equal(old.raw[1], raw[1]) && bytes.Equal(old.raw[2], raw[2]) {
		return nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return r.failed(fmt.Errorf("server certificate %s / key %s: %w", r.files.Cert, r.files.Key, err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw[2]) {
		return r.failed(fmt.Errorf("client CA %s: no PEM certificate found", r.files.ClientCA))
	}
	first := r.cur.Load() == nil
	r.cur.Store(&material{cert: &cert, clientCA: pool, raw: raw})
	r.metrics.CertReloads.WithLabelValues("loaded").Inc()
	leaf := cert.Leaf
	if first {
		r.log.Info("certificates loaded", "cert", r.files.Cert, "clientCA", r.files.ClientCA, "notAfter", leaf.NotAfter)
	} else {
		r.log.Info("certificates reloaded", "cert", r.files.Cert, "clientCA", r.files.ClientCA, "notAfter", leaf.NotAfter)
	}
	return nil
}

func (r *Reloader) failed(err error) error {
	r.metrics.CertReloads.WithLabelValues("error").Inc()
	return err
}

// Watch reloads every interval until ctx ends. Errors are logged; the last
// good material stays in use.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Load(); err != nil {
				r.log.Warn("certificate reload failed; keeping the previous certificates", "error", err.Error())
			}
		}
	}
}

// ServerConfig is the listener's TLS configuration: TLS 1.3 only, a client
// certificate required and verified against the current client CA. With
// skipClientVerify (a development flag) no client certificate is asked for.
func (r *Reloader) ServerConfig(skipClientVerify bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := r.cur.Load()
			if m == nil {
				return nil, errNotLoaded
			}
			c := &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*m.cert},
				NextProtos:   []string{"http/1.1"},
			}
			if !skipClientVerify {
				// The chain is checked in VerifyConnection, against the CA
				// current at this handshake, so each refusal gets a precise
				// reason in logs and metrics. ClientCAs only advertises it.
				c.ClientAuth = tls.RequestClientCert
				c.ClientCAs = m.clientCA
				c.VerifyConnection = func(cs tls.ConnectionState) error { return verifyClient(cs, m.clientCA) }
			}
			return c, nil
		},
	}
}

var errNotLoaded = errors.New("moat: server certificate not loaded yet")

// Refusal reasons, also the label of moat_tls_handshake_failures_total.
const (
	ReasonNoCert      = "no_client_certificate"
	ReasonUntrusted   = "untrusted_client_certificate"
	ReasonExpired     = "expired_client_certificate"
	ReasonWrongUsage  = "client_certificate_usage"
	ReasonTLSVersion  = "tls_version"
	ReasonNotLoaded   = "certificate_not_loaded"
	ReasonOtherClient = "handshake"
)

// VerifyError is a refused client certificate.
type VerifyError struct {
	Reason string
	Err    error
}

func (e *VerifyError) Error() string { return "moat: " + e.Reason + ": " + e.Err.Error() }

func verifyClient(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return &VerifyError{ReasonNoCert, errors.New("the client sent no certificate; Gatekeeper must present its webhook certificate")}
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err == nil {
		return nil
	}
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return &VerifyError{ReasonExpired, fmt.Errorf("certificate %q is outside its validity period (%s to %s)", leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))}
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return &VerifyError{ReasonWrongUsage, fmt.Errorf("certificate %q lacks the client-auth extended key usage", leaf.Subject.CommonName)}
	case errors.As(err, &ua):
		return &VerifyError{ReasonUntrusted, fmt.Errorf("certificate %q (issuer %q) is not signed by the configured client CA (--client-ca)", leaf.Subject.CommonName, leaf.Issuer.CommonName)}
	}
	return &VerifyError{ReasonUntrusted, err}
}
