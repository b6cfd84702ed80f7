package sigcheck_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/moat-dev/moat/provider/internal/sigcheck"
	"github.com/moat-dev/moat/provider/testenv"
)

func verifier(t *testing.T, host string, trust sigcheck.Trust) *sigcheck.Verifier {
	t.Helper()
	v, err := sigcheck.New(sigcheck.Options{Trust: trust, Registry: testenv.RegistryClient(t, host)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKeys(t *testing.T) {
	host := testenv.StartRegistry(t)
	trusted, other := testenv.NewKeySigner(t), testenv.NewKeySigner(t)
	v := verifier(t, host, sigcheck.Trust{KeyFiles: []string{trusted.PubFile}, IgnoreTlog: true})

	signed := testenv.PushRandom(t, host, "app/signed:v1")
	trusted.Sign(t, signed)
	if r := v.Verify(context.Background(), signed.String()); !r.Verified || r.Status != "verified" || r.Identity != "key cosign.pub" {
		t.Errorf("signed by the trusted key: %+v", r)
	}

	unsigned := testenv.PushRandom(t, host, "app/unsigned:v1")
	if r := v.Verify(context.Background(), unsigned.String()); r.Verified || r.Status != "unverified" || r.Reason != "no signatures found" {
		t.Errorf("unsigned: %+v", r)
	}

	untrusted := testenv.PushRandom(t, host, "app/untrusted:v1")
	other.Sign(t, untrusted)
	if r := v.Verify(context.Background(), untrusted.String()); r.Verified || !strings.Contains(r.Reason, "no signature matches") {
		t.Errorf("signed by an untrusted key: %+v", r)
	}

	tampered := testenv.PushRandom(t, host, "app/tampered:v1")
	trusted.Sign(t, tampered)
	testenv.Tamper(t, tampered)
	if r := v.Verify(context.Background(), tampered.String()); r.Verified || r.Reason == "" || r.Reason == "no signatures found" {
		t.Errorf("tampered payload: %+v", r)
	}
}

func TestTransparencyLogChecksAreExplicit(t *testing.T) {
	k := testenv.NewKeySigner(t)
	if _, err := sigcheck.New(sigcheck.Options{Trust: sigcheck.Trust{KeyFiles: []string{k.PubFile}}}); err == nil || !strings.Contains(err.Error(), "--signature-ignore-tlog") {
		t.Errorf("neither a Rekor key nor --signature-ignore-tlog: %v", err)
	}
	// With a Rekor key, a signature without a Rekor bundle is refused.
	host := testenv.StartRegistry(t)
	ref := testenv.PushRandom(t, host, "app/no-bundle:v1")
	k.Sign(t, ref)
	rekor := testenv.NewKeySigner(t) // any ECDSA key stands in for the log's key: no bundle can verify against it
	v := verifier(t, host, sigcheck.Trust{KeyFiles: []string{k.PubFile}, RekorKey: rekor.PubFile})
	if r := v.Verify(context.Background(), ref.String()); r.Verified {
		t.Errorf("a signature with no transparency-log entry verified while the log is required: %+v", r)
	}
}

func TestKeyless(t *testing.T) {
	host := testenv.StartRegistry(t)
	ca := testenv.NewFulcio(t)
	const workflow = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"
	const issuer = "https://token.actions.githubusercontent.com"
	trust := func(ids ...cosign.Identity) *sigcheck.Verifier {
		return verifier(t, host, sigcheck.Trust{Identities: ids, FulcioRoots: ca.RootPEM, IgnoreTlog: true})
	}

	ref := testenv.PushRandom(t, host, "app/keyless:v1")
	ca.Issue(t, workflow, issuer, time.Now().Add(-time.Minute)).Sign(t, ref)
	exact := trust(cosign.Identity{Issuer: issuer, Subject: workflow})
	if r := exact.Verify(context.Background(), ref.String()); !r.Verified || r.Identity != workflow+" (issuer "+issuer+")" {
		t.Errorf("the configured identity: %+v", r)
	}
	byRegexp := trust(cosign.Identity{Issuer: issuer, SubjectRegExp: `^https://github\.com/acme/.*@refs/tags/v[0-9]+$`})
	if r := byRegexp.Verify(context.Background(), ref.String()); !r.Verified {
		t.Errorf("the identity by regular expression: %+v", r)
	}
	another := trust(cosign.Identity{Issuer: issuer, Subject: "https://github.com/acme/other/.github/workflows/release.yml@refs/tags/v1"})
	if r := another.Verify(context.Background(), ref.String()); r.Verified || !strings.Contains(r.Reason, "no signature matches") {
		t.Errorf("another identity: %+v", r)
	}

	expired := testenv.PushRandom(t, host, "app/expired:v1")
	ca.Issue(t, workflow, issuer, time.Now().Add(-time.Hour)).Sign(t, expired)
	if r := exact.Verify(context.Background(), expired.String()); r.Verified || !strings.Contains(r.Reason, "expired") {
		t.Errorf("an expired certificate: %+v", r)
	}

	if _, err := sigcheck.New(sigcheck.Options{Trust: sigcheck.Trust{Identities: []cosign.Identity{{Issuer: issuer, Subject: workflow}}, IgnoreTlog: true}}); err == nil {
		t.Error("keyless identities without Fulcio roots were accepted")
	}
}

func TestRekorBundles(t *testing.T) {
	host := testenv.StartRegistry(t)
	key, log := testenv.NewKeySigner(t), testenv.NewRekor(t)
	v := verifier(t, host, sigcheck.Trust{KeyFiles: []string{key.PubFile}, RekorKey: log.PubFile})

	logged := testenv.PushRandom(t, host, "app/logged:v1")
	key.SignLogged(t, logged, log, time.Now())
	if r := v.Verify(context.Background(), logged.String()); !r.Verified {
		t.Errorf("a signature with a bundle from the trusted log: %+v", r)
	}
	otherLog := testenv.PushRandom(t, host, "app/other-log:v1")
	key.SignLogged(t, otherLog, testenv.NewRekor(t), time.Now())
	if r := v.Verify(context.Background(), otherLog.String()); r.Verified {
		t.Errorf("a bundle from a log that is not trusted verified: %+v", r)
	}

	// Keyless: the log entry dates the signature inside the certificate's ten
	// minutes, so it verifies after the certificate has expired; an entry made
	// after it expired does not.
	ca := testenv.NewFulcio(t)
	const workflow = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"
	const issuer = "https://token.actions.githubusercontent.com"
	kl := verifier(t, host, sigcheck.Trust{Identities: []cosign.Identity{{Issuer: issuer, Subject: workflow}}, FulcioRoots: ca.RootPEM, RekorKey: log.PubFile})
	signer := ca.Issue(t, workflow, issuer, time.Now().Add(-time.Hour))
	inTime := testenv.PushRandom(t, host, "app/logged-in-time:v1")
	signer.SignLogged(t, inTime, log, time.Now().Add(-55*time.Minute))
	if r := kl.Verify(context.Background(), inTime.String()); !r.Verified {
		t.Errorf("keyless, logged while the certificate was valid: %+v", r)
	}
	late := testenv.PushRandom(t, host, "app/logged-late:v1")
	signer.SignLogged(t, late, log, time.Now())
	if r := kl.Verify(context.Background(), late.String()); r.Verified || !strings.Contains(r.Reason, "expired") {
		t.Errorf("keyless, logged after the certificate expired: %+v", r)
	}
}
