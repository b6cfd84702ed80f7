// Package sigcheck verifies cosign signatures of images with cosign's own
// library, against trust configured in the provider: public keys, and
// keyless identities under a Fulcio root. It is a check (package checks):
// results are cached by digest and computed off the admission path.
package sigcheck

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	//lint:ignore SA1019 cosign v2's TrustedTransparencyLogPubKeys takes this package's StatusKind
	"github.com/sigstore/sigstore/pkg/tuf"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/registry"
)

// Trust is what a signature must chain to.
type Trust struct {
	// KeyFiles are PEM public keys (files, or Kubernetes secrets mounted as
	// files); a signature by any of them is trusted.
	KeyFiles []string
	// Identities are keyless signers: a Fulcio certificate for one of them,
	// chaining to FulcioRoots, is trusted.
	Identities []cosign.Identity
	// FulcioRoots is a PEM file of the Fulcio root (and intermediate)
	// certificates of keyless signatures.
	FulcioRoots string
	// RekorKey is the PEM public key of the Rekor log. With it, every
	// signature must carry a Rekor bundle that verifies (offline).
	RekorKey string
	// IgnoreTlog turns transparency-log checks off, explicitly: required
	// when no RekorKey is given, so the choice is never made by default.
	IgnoreTlog bool
	// CTLogKey is the PEM key of the certificate-transparency log whose SCT
	// keyless certificates carry; without it SCTs are not checked.
	CTLogKey string
}

// Options configure a Verifier.
type Options struct {
	Trust Trust
	// Registry fetches signatures and attestations: the client digest
	// resolution uses.
	Registry *registry.Client
}

// Verifier verifies signatures. Safe for concurrent use.
type Verifier struct {
	opts Options
	// trusts are tried in order: each key, then the keyless identities.
	trusts []trust
	// fingerprint identifies the trust (Check.Version).
	fingerprint string
}

// trust is one way a signature can verify: cosign's options for it, and
// how to name the signer it verifies.
type trust struct {
	opts cosign.CheckOpts
	who  func(oci.Signature) string
}

// New loads the trust and returns a Verifier.
func New(opts Options) (*Verifier, error) {
	var err0 error
	t := opts.Trust
	if len(t.KeyFiles) == 0 && len(t.Identities) == 0 {
		return nil, errors.New("signatures: configure at least one public key or keyless identity")
	}
	if t.RekorKey == "" && !t.IgnoreTlog {
		return nil, errors.New("signatures: give the Rekor public key (--signature-rekor-key), or turn transparency-log checks off explicitly (--signature-ignore-tlog)")
	}
	if opts.Registry == nil {
		return nil, errors.New("signatures: no registry client")
	}
	v := &Verifier{opts: opts}
	if v.fingerprint, err0 = fingerprint(t); err0 != nil {
		return nil, err0
	}
	base := cosign.CheckOpts{ClaimVerifier: cosign.SimpleClaimVerifier, IgnoreTlog: t.IgnoreTlog, IgnoreSCT: t.CTLogKey == ""}
	var err error
	if t.RekorKey != "" {
		if base.RekorPubKeys, err = logKey("Rekor key", t.RekorKey); err != nil {
			return nil, err
		}
		base.Offline = true // the bundle in the signature is verified; Rekor is never called
	}
	if t.CTLogKey != "" {
		if base.CTLogPubKeys, err = logKey("CT log key", t.CTLogKey); err != nil {
			return nil, err
		}
	}
	for _, f := range t.KeyFiles {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("signatures: public key: %w", err)
		}
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem)
		if err != nil {
			return nil, fmt.Errorf("signatures: public key %s: %w", f, err)
		}
		sv, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("signatures: public key %s: %w", f, err)
		}
		co, name := base, "key "+filepath.Base(f)
		co.SigVerifier = sv
		v.trusts = append(v.trusts, trust{opts: co, who: func(oci.Signature) string { return name }})
	}
	if len(t.Identities) > 0 {
		if t.FulcioRoots == "" {
			return nil, errors.New("signatures: keyless identities need the Fulcio root certificates (--signature-fulcio-roots)")
		}
		pem, err := os.ReadFile(t.FulcioRoots)
		if err != nil {
			return nil, fmt.Errorf("signatures: Fulcio roots: %w", err)
		}
		certs, err := cryptoutils.UnmarshalCertificatesFromPEM(pem)
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("signatures: Fulcio roots %s: no certificates (%v)", t.FulcioRoots, err)
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, c := range certs {
			if isSelfSigned(c) {
				roots.AddCert(c)
			} else {
				inter.AddCert(c)
			}
		}
		co := base
		co.RootCerts, co.IntermediateCerts, co.Identities = roots, inter, t.Identities
		v.trusts = append(v.trusts, trust{opts: co, who: keylessIdentity})
	}
	return v, nil
}

// logKey reads the PEM public key of a transparency log (Rekor or CT).
func logKey(what, path string) (*cosign.TrustedTransparencyLogPubKeys, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signatures: %s: %w", what, err)
	}
	keys := cosign.NewTrustedTransparencyLogPubKeys()
	if err := keys.AddTransparencyLogPubKey(pem, tuf.Active); err != nil {
		return nil, fmt.Errorf("signatures: %s %s: %w", what, path, err)
	}
	return &keys, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

// Verify checks image (a digest reference) against every trusted key and
// identity, and reports the first that verifies, or why none did.
func (v *Verifier) Verify(ctx context.Context, image string) answer.Signature {
	ref, reg, err := v.reference(ctx, image, registry.Signature)
	if err != nil {
		return unverified(err.Error())
	}
	sigs, who, err := v.each(func(co *cosign.CheckOpts) ([]oci.Signature, error) {
		co.RegistryClientOpts = reg
		sigs, _, err := cosign.VerifyImageSignatures(ctx, ref, co)
		return sigs, err
	})
	if err != nil {
		return unverified(err.Error())
	}
	return answer.Signature{Verified: true, Status: answer.Verified, Identity: who(sigs[0])}
}

func (v *Verifier) reference(ctx context.Context, image, purpose string) (name.Digest, []ociremote.Option, error) {
	ref, err := v.opts.Registry.Digest(image)
	if err != nil {
		return ref, nil, fmt.Errorf("%s: signatures are checked on digest references: %w", image, err)
	}
	return ref, []ociremote.Option{ociremote.WithRemoteOptions(v.opts.Registry.Options(ctx, purpose)...)}, nil
}

// each runs verify with the options of every trust in turn until one
// returns signatures; it returns them and how to name their signer, or why
// none verified.
func (v *Verifier) each(verify func(*cosign.CheckOpts) ([]oci.Signature, error)) ([]oci.Signature, func(oci.Signature) string, error) {
	var reasons []string
	for _, tr := range v.trusts {
		co := tr.opts // a copy: verify sets per-call options on it
		sigs, err := verify(&co)
		if err == nil && len(sigs) > 0 {
			return sigs, tr.who, nil
		}
		reasons = append(reasons, explain(err))
	}
	return nil, nil, errors.New(strings.Join(dedupe(reasons), "; "))
}

// ErrNoAttestations means the image has no attestation attached at all.
var ErrNoAttestations = errors.New("no attestations attached to the image")

// Statement is a verified in-toto statement of an attestation.
type Statement struct {
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
	// Signer names the key or identity that signed it.
	Signer string `json:"-"`
}

// Attestations returns the attestations of image whose signature verifies
// against the trust, decoded. With none attached it returns
// ErrNoAttestations; when none verifies, why.
func (v *Verifier) Attestations(ctx context.Context, image string) ([]Statement, error) {
	ref, reg, err := v.reference(ctx, image, registry.Attestation)
	if err != nil {
		return nil, err
	}
	se, err := ociremote.SignedEntity(ref, reg...)
	if err != nil {
		return nil, fmt.Errorf("%s: reading its attestations: %w", image, err)
	}
	atts, err := se.Attestations()
	if err != nil {
		return nil, fmt.Errorf("%s: reading its attestations: %w", image, err)
	}
	if list, err := atts.Get(); err != nil {
		return nil, fmt.Errorf("%s: reading its attestations: %w", image, err)
	} else if len(list) == 0 {
		return nil, fmt.Errorf("%s: %w", image, ErrNoAttestations)
	}
	verified, who, err := v.each(func(co *cosign.CheckOpts) ([]oci.Signature, error) {
		co.RegistryClientOpts = reg
		co.ClaimVerifier = cosign.IntotoSubjectClaimVerifier
		sigs, _, err := cosign.VerifyImageAttestations(ctx, ref, co)
		return sigs, err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: no attestation verifies against the trusted keys and identities: %w", image, err)
	}
	var out []Statement
	for _, a := range verified {
		st, err := decodeStatement(a)
		if err != nil {
			return nil, fmt.Errorf("%s: an attestation could not be read: %w", image, err)
		}
		st.Signer = who(a)
		out = append(out, st)
	}
	return out, nil
}

// decodeStatement reads the in-toto statement out of a DSSE envelope.
func decodeStatement(a oci.Signature) (Statement, error) {
	raw, err := a.Payload()
	if err != nil {
		return Statement{}, err
	}
	var env struct {
		Payload string `json:"payload"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return Statement{}, fmt.Errorf("not a DSSE envelope: %w", err)
	}
	body, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return Statement{}, fmt.Errorf("DSSE payload: %w", err)
	}
	var st Statement
	if err := json.Unmarshal(body, &st); err != nil {
		return Statement{}, fmt.Errorf("not an in-toto statement: %w", err)
	}
	return st, nil
}

func unverified(reason string) answer.Signature {
	return answer.Signature{Status: answer.Unverified, Reason: reason}
}

// keylessIdentity is the certificate's subject (e-mail or URI) and issuer.
func keylessIdentity(s oci.Signature) string {
	c, err := s.Cert()
	if err != nil || c == nil {
		return "keyless"
	}
	subject := strings.Join(cryptoutils.GetSubjectAlternateNames(c), ",")
	for _, ext := range c.Extensions {
		if ext.Id.String() == "1.3.6.1.4.1.57264.1.1" { // Fulcio's OIDC issuer (v1)
			return subject + " (issuer " + string(ext.Value) + ")"
		}
	}
	return subject
}

// explain turns cosign's errors into reasons a person can act on.
func explain(err error) string {
	if err == nil {
		return "no signature verified"
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	var noSigs *cosign.ErrNoSignaturesFound
	var noMatch *cosign.ErrNoMatchingSignatures
	switch {
	case errors.As(err, &noSigs):
		return "no signatures found"
	case errors.As(err, &noMatch):
		return "no signature matches the trusted keys and identities: " + msg
	}
	return msg
}

func dedupe(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Check is signature verification as a check.
type Check struct {
	V *Verifier
	// VerifiedTTL is how long a verified result is served; UnverifiedTTL
	// an unverified one (a signature may be added later) or a failure.
	VerifiedTTL, UnverifiedTTL time.Duration
}

// Run verifies image.
func (c Check) Run(ctx context.Context, image string) checks.Outcome {
	r := c.V.Verify(ctx, image)
	if ctx.Err() != nil && !r.Verified {
		return c.Failed(image, fmt.Errorf("%s: the signature check was cancelled: %w", image, context.Cause(ctx)))
	}
	ttl := c.UnverifiedTTL
	if r.Verified {
		ttl = c.VerifiedTTL
	}
	return checks.Outcome{Fragment: r.Fragment(), TTL: ttl, Status: r.Status}
}

// Failed is an unverified result with the reason: a check that could not
// run never counts as verified.
func (c Check) Failed(_ string, err error) checks.Outcome {
	return checks.Outcome{Fragment: unverified(err.Error()).Fragment(), TTL: c.UnverifiedTTL, Status: "unverified", Kind: "failed"}
}

// Pending is "not yet verified".
func (c Check) Pending(reason string) []byte {
	return answer.Signature{Status: answer.Pending, Reason: reason}.Fragment()
}

// Version is the trust's fingerprint: replicas that share results must
// trust the same signers.
func (c Check) Version() string { return c.V.fingerprint }

// fingerprint digests the trust: its settings and the files they name, so
// a key rotated under the same file name is another trust.
func fingerprint(t Trust) (string, error) {
	h := sha256.New()
	settings, err := json.Marshal(t)
	if err != nil {
		return "", err
	}
	h.Write(settings)
	for _, f := range append(append([]string{}, t.KeyFiles...), t.FulcioRoots, t.RekorKey, t.CTLogKey) {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("signatures: %w", err)
		}
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return "trust:" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}
