package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/certs"
	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/provider/testenv/answertest"
)

func lookupKeys(t *testing.T, env *testenv.Env, c *http.Client, path string, keys ...string) *client.Response {
	t.Helper()
	resp, code, err := client.Lookup(context.Background(), c, env.URL+path, keys)
	if err != nil {
		t.Fatalf("lookup %v: %v", keys, err)
	}
	if code != http.StatusOK {
		t.Fatalf("lookup %v: HTTP %d: %s", keys, code, resp.Response.SystemError)
	}
	if len(resp.Response.Items) != len(keys) {
		t.Fatalf("got %d items for %d keys", len(resp.Response.Items), len(keys))
	}
	for i, it := range resp.Response.Items {
		if it.Key != keys[i] {
			t.Fatalf("item %d echoes key %q, want %q byte for byte", i, it.Key, keys[i])
		}
	}
	return resp
}

func value(t *testing.T, it client.Item) *answer.Value {
	t.Helper()
	if it.Error != "" {
		t.Fatalf("key %q: unexpected error %q", it.Key, it.Error)
	}
	return answertest.Check(t, it.Value)
}

func TestValidateAndMutateAnswerTheRegistryDigest(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	imgs, err := devregistry.Seed(context.Background(), env.RegistryHost)
	if err != nil {
		t.Fatal(err)
	}
	c := env.Client(t)
	for _, im := range imgs {
		resp := lookupKeys(t, env, c, "/validate", im.Ref)
		v := value(t, resp.Response.Items[0])
		// For a multi-platform image, im.Digest is the index's.
		if v.Schema != answer.Schema || v.Digest != im.Digest {
			t.Errorf("%s: value %+v, want digest %s", im.Ref, v, im.Digest)
		}
		if !resp.Response.Idempotent {
			t.Error("response not idempotent")
		}

		mresp := lookupKeys(t, env, c, "/mutate", im.Ref)
		var pinned string
		if err := json.Unmarshal(mresp.Response.Items[0].Value, &pinned); err != nil || pinned != im.Ref+"@"+im.Digest {
			t.Errorf("mutate %s = %s (%v), want %s@%s", im.Ref, mresp.Response.Items[0].Value, err, im.Ref, im.Digest)
		}
	}

	// A key that already pins a digest comes back unchanged from /mutate,
	// with no registry call.
	heads := env.Registry.ManifestHeads()
	key := "nginx:1.27@sha256:" + strings.Repeat("ab", 32)
	mresp := lookupKeys(t, env, c, "/mutate", key)
	if got := string(mresp.Response.Items[0].Value); got != `"`+key+`"` {
		t.Errorf("mutate of a pinned key = %s, want it unchanged", got)
	}
	v := value(t, lookupKeys(t, env, c, "/validate", key).Response.Items[0])
	if v.Digest != "sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("pinned key value %+v", v)
	}
	if env.Registry.ManifestHeads() != heads {
		t.Error("a digest-pinned key caused a registry request")
	}
}

func TestDuplicateKeysResolveOnce(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	ref, digest := env.Push(t, "dup/app:v1")
	before := env.Registry.ManifestHeads() // the push itself asks once
	resp := lookupKeys(t, env, env.Client(t), "/validate", ref, ref, ref)
	for _, it := range resp.Response.Items {
		if value(t, it).Digest != digest {
			t.Errorf("item %+v", it)
		}
	}
	if n := env.Registry.ManifestHeads() - before; n != 1 {
		t.Errorf("%d manifest requests for one key asked three times, want 1", n)
	}
}

func TestSingleflightOneRegistryRequestFor1000Lookups(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	ref, digest := env.Push(t, "sf/app:v1")
	// Hold each registry answer long enough that every lookup starts while
	// the first resolution is still in flight.
	env.Registry.SetDelay(300 * time.Millisecond)
	before := env.Registry.ManifestHeads()

	var wg sync.WaitGroup
	start := make(chan struct{})
	answers := make([]*lookup.Answer, 1000)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = env.Service.Lookup(context.Background(), time.Now().Add(5*time.Second), []string{ref})[0]
		}()
	}
	close(start)
	wg.Wait()
	for i, a := range answers {
		if a.Reason != "" || !bytes.Contains(a.Validate, []byte(digest)) {
			t.Fatalf("lookup %d answered %s", i, a.Validate)
		}
	}
	if n := env.Registry.ManifestHeads() - before; n != 1 {
		t.Errorf("1000 concurrent lookups caused %d manifest requests, want exactly 1", n)
	}
}

// faultyRegistry starts an extra registry holding one image, with fault f.
func faultyRegistry(t *testing.T, f devregistry.Fault) (host, ref string) {
	t.Helper()
	reg := devregistry.New()
	srv := httptest.NewServer(reg)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	host = strings.TrimPrefix(srv.URL, "http://")
	ref = host + "/faulty/app:v1"
	if _, err := devregistry.Push(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	reg.SetFault(f)
	return host, ref
}

func TestBadKeysAndFailingRegistriesAreAnsweredPerKey(t *testing.T) {
	limited, limitedRef := faultyRegistry(t, devregistry.TooManyRequests)
	hanging, hangingRef := faultyRegistry(t, devregistry.Hang)
	broken, brokenRef := faultyRegistry(t, devregistry.ServerError)
	down := httptest.NewServer(http.NotFoundHandler())
	downHost := strings.TrimPrefix(down.URL, "http://")
	down.Close()

	cfg := testenv.Defaults()
	cfg.Server.ValidateDeadline = 500 * time.Millisecond
	cfg.Lookup.ResolveTimeout = 2 * time.Second
	cfg.Registry.InsecureRegistries = []string{limited, hanging, broken, downHost}
	env := testenv.Start(t, cfg)
	good, digest := env.Push(t, "ok/app:v1")

	cases := []struct {
		key, reason, says string
	}{
		{"", "invalid_reference", "empty"},
		{"UPPER/case:v1", "invalid_reference", "invalid image reference"},
		{"nginx:bad tag", "invalid_reference", "contains the character ' '"},
		{"ngïnx:1", "invalid_reference", "contains the character 'ï'"},
		{"nginx\x00:1", "invalid_reference", "contains the character"},
		{"nginx:1\n", "invalid_reference", "contains the character"},
		{"nginx@sha256:tooshort", "invalid_reference", "invalid image reference"},
		{"a@b@c", "invalid_reference", "more than one '@'"},
		{strings.Repeat("a", 2000), "invalid_reference", "the limit is 1024"},
		{env.RegistryHost + "/ok/app:missing", "not_found", "not found in registry"},
		{limitedRef, "rate_limited", "HTTP 429"},
		{hangingRef, "pending", "did not finish before this request's deadline"},
		{brokenRef, "server_error", "HTTP 503"},
		{downHost + "/gone/app:v1", "unreachable", "cannot reach registry"},
	}
	keys := []string{good}
	for _, c := range cases {
		keys = append(keys, c.key)
	}
	keys = append(keys, good)
	resp := lookupKeys(t, env, env.Client(t), "/validate", keys...)
	items := resp.Response.Items
	if v := value(t, items[0]); v.Digest != digest {
		t.Errorf("good key beside bad ones: %+v", v)
	}
	if v := value(t, items[len(items)-1]); v.Digest != digest {
		t.Errorf("good key after bad ones: %+v", v)
	}
	for i, c := range cases {
		it := items[i+1]
		if it.Error == "" || !strings.Contains(it.Error, c.says) {
			t.Errorf("key %q: error %q, want it to say %q", c.key, it.Error, c.says)
		}
		if it.Value != nil {
			t.Errorf("key %q: has a value beside its error", c.key)
		}
		if got := testutil.ToFloat64(env.Metrics.KeyErrors.WithLabelValues("validate", c.reason)); got < 1 {
			t.Errorf("key %q: moat_key_errors_total{reason=%q} = %v", c.key, c.reason, got)
		}
	}
}

func TestHungResolutionFillsTheCacheInTheBackground(t *testing.T) {
	cfg := testenv.Defaults()
	cfg.Server.ValidateDeadline = 200 * time.Millisecond
	env := testenv.Start(t, cfg)
	ref, digest := env.Push(t, "slow/app:v1")
	env.Registry.SetDelay(600 * time.Millisecond)
	c := env.Client(t)
	before := env.Registry.ManifestHeads()

	first := lookupKeys(t, env, c, "/validate", ref).Response.Items[0]
	if !strings.Contains(first.Error, "goes on in the background") {
		t.Fatalf("first lookup: %+v, want the pending error", first)
	}
	// Poll until the background resolution has landed in the cache.
	deadline := time.Now().Add(10 * time.Second)
	for {
		it := lookupKeys(t, env, c, "/validate", ref).Response.Items[0]
		if it.Error == "" {
			if v := value(t, it); v.Digest != digest {
				t.Fatalf("digest %s, want %s", v.Digest, digest)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %q after 10s", it.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := env.Registry.ManifestHeads() - before; n != 1 {
		t.Errorf("%d manifest requests, want 1: the pending lookups must join the running resolution", n)
	}
}

func TestMalformedRequestsGetSystemErrorAnd4xx(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	c := env.Client(t)
	manyKeys := make([]string, 10000)
	for i := range manyKeys {
		manyKeys[i] = fmt.Sprintf("app%d:v1", i)
	}
	huge := client.Body([]string{strings.Repeat("x", 5<<20)})

	cases := []struct {
		name   string
		method string
		body   []byte
		code   int
		says   string
	}{
		{"bad JSON", "POST", []byte(`{"apiVersion":`), 400, "not valid JSON"},
		{"not an object", "POST", []byte(`[1,2]`), 400, "invalid ProviderRequest"},
		{"trailing data", "POST", append(client.Body([]string{"a"}), []byte(`{}`)...), 400, "unexpected data"},
		{"wrong kind", "POST", []byte(`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderResponse","request":{"keys":["a"]}}`), 400, `kind is "ProviderResponse"`},
		{"wrong apiVersion", "POST", []byte(`{"apiVersion":"v1","kind":"ProviderRequest","request":{"keys":["a"]}}`), 400, `apiVersion is "v1"`},
		{"empty keys", "POST", client.Body([]string{}), 400, "request.keys is empty"},
		{"no keys", "POST", []byte(`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest"}`), 400, "request.keys is empty"},
		{"non-string key", "POST", []byte(`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":[1]}}`), 400, "must be an array of strings"},
		{"10,000 keys", "POST", client.Body(manyKeys), 413, "too many keys: 10000"},
		{"5 MiB body", "POST", huge, 413, "larger than the limit"},
		{"GET", "GET", nil, 405, "method GET not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, env.URL+"/validate", bytes.NewReader(tc.body))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var pr client.Response
			if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
				t.Fatalf("HTTP %d, body is not a ProviderResponse: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != tc.code || !strings.Contains(pr.Response.SystemError, tc.says) {
				t.Errorf("HTTP %d systemError %q, want %d saying %q", resp.StatusCode, pr.Response.SystemError, tc.code, tc.says)
			}
			if len(pr.Response.Items) != 0 {
				t.Errorf("a refused request answered %d items", len(pr.Response.Items))
			}
		})
	}
	// The server is still healthy after all of that.
	ref, digest := env.Push(t, "after/app:v1")
	if v := value(t, lookupKeys(t, env, c, "/validate", ref).Response.Items[0]); v.Digest != digest {
		t.Errorf("after bad input: %+v", v)
	}
}

// handshake dials the provider with conf and sends one request.
func handshake(env *testenv.Env, conf *tls.Config) error {
	c := client.New(conf, 1, 5*time.Second)
	_, _, err := client.Post(context.Background(), c, env.URL+"/validate", client.Body([]string{"nginx"}))
	return err
}

func waitCounter(t *testing.T, env *testenv.Env, reason string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(env.Metrics.HandshakeFailures.WithLabelValues(reason)) < want {
		if time.Now().After(deadline) {
			t.Fatalf("moat_tls_handshake_failures_total{reason=%q} never reached %v", reason, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMutualTLSRefusals(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	good := env.ClientTLS(t)
	if err := handshake(env, good); err != nil {
		t.Fatalf("the genuine client is refused: %v", err)
	}
	now := time.Now()
	otherCA, err := certs.NewCA("other-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	withPair := func(p certs.Pair) *tls.Config {
		pair, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		c := good.Clone()
		c.Certificates = nil
		// As Gatekeeper's client does: always present the certificate,
		// whatever CAs the server names.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		return c
	}
	issue := func(ca *certs.CA, l certs.Leaf) *tls.Config {
		p, err := ca.Issue(l)
		if err != nil {
			t.Fatal(err)
		}
		return withPair(p)
	}
	noCert := good.Clone()
	noCert.Certificates = nil
	tls12 := good.Clone()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	cases := []struct {
		name   string
		conf   *tls.Config
		reason string
	}{
		{"no client certificate", noCert, mtls.ReasonNoCert},
		{"certificate from another CA", issue(otherCA, certs.Leaf{CommonName: "intruder", Client: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}), mtls.ReasonUntrusted},
		{"expired certificate", issue(env.Certs.CA, certs.Leaf{CommonName: "old", Client: true, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}), mtls.ReasonExpired},
		{"server-only certificate", issue(env.Certs.CA, certs.Leaf{CommonName: "srv", Server: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}), mtls.ReasonWrongUsage},
		{"TLS 1.2 only", tls12, mtls.ReasonTLSVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(env.Metrics.HandshakeFailures.WithLabelValues(tc.reason))
			if err := handshake(env, tc.conf); err == nil {
				t.Fatal("request succeeded, want the connection refused")
			}
			waitCounter(t, env, tc.reason, before+1)
			// The refusal is counted before it is logged: wait for the line.
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(env.Log.String(), `"reason":"`+tc.reason+`"`) {
				if time.Now().After(deadline) {
					t.Fatalf("refusal not logged with reason %q", tc.reason)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestCertificateRotationWithoutRestart(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	serverSerial := func(conf *tls.Config) (string, error) {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(env.URL, "https://"), conf)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		// Complete a request so the server has verified us too.
		if err := conn.Handshake(); err != nil {
			return "", err
		}
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	oldConf := env.ClientTLS(t)
	if err := handshake(env, oldConf); err != nil {
		t.Fatal(err)
	}
	oldSerial, err := serverSerial(oldConf)
	if err != nil {
		t.Fatal(err)
	}

	// Rotate everything: a new CA, server and client certificate.
	next, err := certs.NewDevSet(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Write(env.CertDir); err != nil {
		t.Fatal(err)
	}
	newConf := env.ClientTLS(t) // reads the new files
	deadline := time.Now().Add(10 * time.Second)
	for handshake(env, newConf) != nil {
		if time.Now().After(deadline) {
			t.Fatal("new certificates not in use 10s after rotation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	newSerial, err := serverSerial(newConf)
	if err != nil {
		t.Fatal(err)
	}
	if newSerial == oldSerial {
		t.Fatal("server still presents the old certificate")
	}
	if err := handshake(env, oldConf); err == nil {
		t.Error("a client certificate of the replaced CA is still accepted")
	}
	if got := testutil.ToFloat64(env.Metrics.CertReloads.WithLabelValues("loaded")); got < 2 {
		t.Errorf("moat_certificate_reloads_total{result=loaded} = %v, want >= 2", got)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(env.OpsURL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: HTTP %d", p, resp.StatusCode)
		}
	}
	resp, err := http.Get(env.OpsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	for _, name := range []string{"moat_cache_hits_total", "moat_tls_handshake_failures_total", "moat_request_duration_seconds", "moat_cache_entries"} {
		if !strings.Contains(buf.String(), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}
