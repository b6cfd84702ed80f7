package testenv

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/cosign/v2/pkg/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
)

// Signer signs images with cosign's library, as `cosign sign` does with
// tlog upload off: a key made in the test, or a keyless certificate from a
// test Fulcio.
type Signer struct {
	sv      signature.SignerVerifier
	PubFile string // key signers: the public key (PEM), for --signature-keys
	pubPEM  []byte
	cert    []byte // keyless: the leaf certificate (PEM)
	chain   []byte
}

// NewKeySigner makes a key pair, as `cosign generate-key-pair` does.
func NewKeySigner(t testing.TB) *Signer {
	t.Helper()
	priv, pub, f := newKey(t, "cosign.pub")
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{sv: sv, PubFile: f, pubPEM: pub}
}

// newKey makes a P-256 key and writes its public key (PEM) to a file
// called name; it returns the key, the PEM and the file.
func newKey(t testing.TB, name string) (*ecdsa.PrivateKey, []byte, string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, pub, f
}

// Sign signs ref as `cosign sign` does (tlog upload off) and attaches the
// signature in the registry.
func (s *Signer) Sign(t testing.TB, ref name.Digest) {
	t.Helper()
	s.sign(t, ref, nil)
}

// sign signs ref; extra adds options made from the payload and signature.
func (s *Signer) sign(t testing.TB, ref name.Digest, extra func(payload []byte, b64sig string) []static.Option) {
	t.Helper()
	pl, err := (&payload.Cosign{Image: ref}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.sv.SignMessage(bytes.NewReader(pl))
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(raw)
	var opts []static.Option
	if s.cert != nil {
		opts = append(opts, static.WithCertChain(s.cert, s.chain))
	}
	if extra != nil {
		opts = append(opts, extra(pl, b64)...)
	}
	sig, err := static.NewSignature(pl, b64, opts...)
	if err != nil {
		t.Fatal(err)
	}
	se, err := ociremote.SignedEntity(ref)
	if err != nil {
		t.Fatal(err)
	}
	se, err = mutate.AttachSignatureToEntity(se, sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := ociremote.WriteSignatures(ref.Repository, se); err != nil {
		t.Fatal(err)
	}
}

// Tamper rewrites the signature image of ref in the registry with one byte
// of each payload changed, signatures and certificates kept.
func Tamper(t testing.TB, ref name.Digest) {
	t.Helper()
	sigs, err := ociremote.Signatures(ref)
	if err != nil {
		t.Fatal(err)
	}
	list, err := sigs.Get()
	if err != nil || len(list) == 0 {
		t.Fatalf("no signatures to tamper with: %v", err)
	}
	var changed []*staticSig
	for _, s := range list {
		pl, _ := s.Payload()
		b64, _ := s.Base64Signature()
		pl = bytes.Replace(pl, []byte(`"docker-manifest-digest"`), []byte(`"docker-manifest-digesT"`), 1)
		changed = append(changed, &staticSig{pl, b64})
	}
	base := empty.Signatures()
	for _, c := range changed {
		sig, err := static.NewSignature(c.payload, c.b64)
		if err != nil {
			t.Fatal(err)
		}
		if base, err = mutate.AppendSignatures(base, false, sig); err != nil {
			t.Fatal(err)
		}
	}
	tag, err := ociremote.SignatureTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, base); err != nil {
		t.Fatal(err)
	}
}

type staticSig struct {
	payload []byte
	b64     string
}

// Fulcio is a Fulcio-style CA made in the test: it issues short-lived
// code-signing certificates carrying an identity and its OIDC issuer.
type Fulcio struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	RootPEM string
}

func NewFulcio(t testing.TB) *Fulcio {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-fulcio"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	f := filepath.Join(t.TempDir(), "fulcio.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Fulcio{cert: cert, key: key, RootPEM: f}
}

// Issue returns a keyless signer for subject (a URI) from issuer, whose
// certificate is valid from notBefore for 10 minutes.
func (f *Fulcio) Issue(t testing.TB, subject, issuer string, notBefore time.Time) *Signer {
	t.Helper()
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(subject)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: notBefore, NotAfter: notBefore.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		URIs:            []*url.URL{u},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}, Value: []byte(issuer)}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.cert, priv.Public(), f.key)
	if err != nil {
		t.Fatal(err)
	}
	sv, _ := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	return &Signer{sv: sv, cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		chain: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.cert.Raw})}
}

// WithSignatureKeys returns cfg with signature checks on, trusting the PEM
// public keys keyFiles (transparency-log checks off, as for test keys), and
// unverified results kept for 100ms.
func WithSignatureKeys(cfg Config, keyFiles ...string) Config {
	cfg.Signatures = app.SignatureConfig{
		Trust:       sigcheck.Trust{KeyFiles: keyFiles, IgnoreTlog: true},
		Checks:      checks.Options{Workers: 2, QueueSize: 100, Timeout: 10 * time.Second, CacheSize: 1000},
		VerifiedTTL: time.Hour, UnverifiedTTL: 100 * time.Millisecond,
	}
	return cfg
}

// Attest attaches a signed in-toto attestation to ref as `cosign attest`
// does (tlog upload off): kind is "vuln" (cosign's vuln/v1 predicate),
// "openvex" (an OpenVEX document) or "custom", predicate its JSON.
func (s *Signer) Attest(t testing.TB, ref name.Digest, kind string, predicate []byte) {
	t.Helper()
	st, err := attestation.GenerateStatement(attestation.GenerateOpts{
		Predicate: bytes.NewReader(predicate), Type: kind, Digest: ref.DigestStr()[len("sha256:"):], Repo: ref.Repository.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := dsse.WrapSigner(s.sv, types.IntotoPayloadType).SignMessage(bytes.NewReader(pl))
	if err != nil {
		t.Fatal(err)
	}
	pt := "https://cosign.sigstore.dev/attestation/v1"
	switch kind {
	case "vuln":
		pt = attestation.CosignVulnProvenanceV01
	case "openvex":
		pt = attestation.OpenVexNamespace
	}
	opts := []static.Option{static.WithAnnotations(map[string]string{"predicateType": pt})}
	if s.cert != nil {
		opts = append(opts, static.WithCertChain(s.cert, s.chain))
	}
	att, err := static.NewAttestation(signed, opts...)
	if err != nil {
		t.Fatal(err)
	}
	se, err := ociremote.SignedEntity(ref)
	if err != nil {
		t.Fatal(err)
	}
	if se, err = mutate.AttachAttestationToEntity(se, att); err != nil {
		t.Fatal(err)
	}
	if err := ociremote.WriteAttestations(ref.Repository, se); err != nil {
		t.Fatal(err)
	}
}

// VulnPredicate is a cosign vuln/v1 predicate whose scanner.result is
// report (a Grype or Trivy JSON report), finished at finished.
func VulnPredicate(scanner string, report string, finished time.Time) []byte {
	return []byte(`{"invocation":{"uri":"https://ci.example.com/run/1"},` +
		`"scanner":{"uri":"` + scanner + `","version":"1.0.0","db":{"uri":"https://db.example.com","version":"v6.1.10"},"result":` + report + `},` +
		`"metadata":{"scanStartedOn":"` + finished.Add(-time.Minute).UTC().Format(time.RFC3339) + `","scanFinishedOn":"` + finished.UTC().Format(time.RFC3339) + `"}}`)
}

// Rekor stands in for a Rekor transparency log: its key, made in the test,
// signs the signed entry timestamps of the bundles it issues, as Rekor's own
// does. No log is kept; verification is offline, as with a real bundle.
type Rekor struct {
	key     *ecdsa.PrivateKey
	PubFile string // the log's public key (PEM), for --signature-rekor-key
	index   int64
}

// NewRekor makes a log key.
func NewRekor(t testing.TB) *Rekor {
	t.Helper()
	key, _, f := newKey(t, "rekor.pub")
	return &Rekor{key: key, PubFile: f}
}

// bundle is the log's bundle for a hashedrekord entry of payload, signed
// with b64sig by the key or certificate in publicKeyPEM, integrated at.
func (r *Rekor) bundle(t testing.TB, payload []byte, b64sig string, publicKeyPEM []byte, at time.Time) *cbundle.RekorBundle {
	t.Helper()
	h := sha256.Sum256(payload)
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1", "kind": "hashedrekord",
		"spec": map[string]any{
			"data":      map[string]any{"hash": map[string]any{"algorithm": "sha256", "value": hex.EncodeToString(h[:])}},
			"signature": map[string]any{"content": b64sig, "publicKey": map[string]any{"content": base64.StdEncoding.EncodeToString(publicKeyPEM)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	logID, err := cosign.GetTransparencyLogID(r.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	r.index++
	p := cbundle.RekorPayload{Body: base64.StdEncoding.EncodeToString(body), IntegratedTime: at.Unix(), LogIndex: r.index, LogID: logID}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := jsoncanonicalizer.Transform(raw)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(canonical)
	set, err := ecdsa.SignASN1(rand.Reader, r.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return &cbundle.RekorBundle{SignedEntryTimestamp: set, Payload: p}
}

// SignLogged signs ref like Sign and adds the bundle of a log entry
// integrated at the given time.
func (s *Signer) SignLogged(t testing.TB, ref name.Digest, log *Rekor, at time.Time) {
	t.Helper()
	s.sign(t, ref, func(payload []byte, b64sig string) []static.Option {
		key := s.cert
		if key == nil {
			key = s.pubPEM
		}
		return []static.Option{static.WithBundle(log.bundle(t, payload, b64sig, key, at))}
	})
}
