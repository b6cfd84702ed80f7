package credentials_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// cloud is a STAND-IN for the cloud identity services this machine cannot
// reach: Microsoft Entra ID (login.microsoftonline.com, with its OpenID
// metadata and token endpoint), Azure's instance metadata service
// (169.254.169.254, managed identity), AWS STS (AssumeRoleWithWebIdentity),
// ECR's GetAuthorizationToken, and the GCE metadata server. Each answers as
// its documentation says; the identity client's transport sends the real
// hosts' requests here, so the SDKs run unchanged.
type cloud struct {
	srv *httptest.Server
	// metadata is the GCE metadata server, plain HTTP as the real one.
	metadata *httptest.Server
	// registryUser is the user ECR and Google tokens stand for, and
	// password their password at the registry.
	ecrPassword, googleToken string
	// expiresIn is the life of the tokens it issues.
	expiresIn time.Duration
	// fail answers every identity call with 500.
	fail bool
	// hang holds every identity call until the client gives up or the
	// test ends.
	hang    bool
	release chan struct{}
	// now is the stand-in's clock, which tokens' ends are counted from.
	now func() time.Time

	mu    sync.Mutex
	calls map[string]int // by endpoint
}

func newCloud(t *testing.T) *cloud {
	c := &cloud{calls: map[string]int{}, expiresIn: time.Hour, ecrPassword: "ecr-pass-" + t.Name(), googleToken: "ya29.google-" + t.Name(),
		release: make(chan struct{}), now: time.Now}
	c.srv = httptest.NewTLSServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	c.metadata = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.metadata.Close)
	t.Cleanup(func() { close(c.release) }) // before the servers close
	return c
}

func (c *cloud) count(endpoint string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[endpoint]
}

func (c *cloud) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.calls {
		n += v
	}
	return n
}

// client is the identity client: requests to the clouds' hosts go to the
// stand-in, with the host they were for in X-Cloud-Host.
func (c *cloud) client() *http.Client {
	base := c.srv.Client().Transport.(*http.Transport).Clone()
	return &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("X-Cloud-Host", r.URL.Host)
		u, _ := url.Parse(c.srv.URL)
		r.URL.Scheme, r.URL.Host = "https", u.Host
		return base.RoundTrip(r)
	})}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *cloud) serve(w http.ResponseWriter, r *http.Request) {
	host := r.Header.Get("X-Cloud-Host")
	if host == "" { // the GCE metadata server is named by GCE_METADATA_HOST
		host = "metadata.google.internal"
	}
	endpoint := host + r.URL.Path
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		endpoint += "#" + t
	}
	c.mu.Lock()
	c.calls[endpoint]++
	c.mu.Unlock()
	if c.hang {
		select {
		case <-r.Context().Done():
		case <-c.release:
		}
		return
	}
	if c.fail {
		http.Error(w, "the identity service is failing", http.StatusInternalServerError)
		return
	}
	expiresOn := c.now().Add(c.expiresIn)
	_ = r.ParseForm()
	switch {
	case host == "login.microsoftonline.com" && r.URL.Path == "/common/discovery/instance":
		tenant := strings.Split(strings.TrimPrefix(r.Form.Get("authorization_endpoint"), "https://login.microsoftonline.com/"), "/")[0]
		writeJSON(w, map[string]any{"tenant_discovery_endpoint": "https://login.microsoftonline.com/" + tenant + "/v2.0/.well-known/openid-configuration",
			"metadata": []any{map[string]any{"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net", "aliases": []string{"login.microsoftonline.com"}}}})
	case host == "login.microsoftonline.com" && strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
		tenant := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
		base := "https://login.microsoftonline.com/" + tenant
		writeJSON(w, map[string]any{"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer": base + "/v2.0"})
	case host == "login.microsoftonline.com" && strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
		if r.Form.Get("client_assertion") != "federated-token" || !strings.Contains(r.Form.Get("scope"), "https://containerregistry.azure.net/.default") {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		writeJSON(w, map[string]any{"access_token": "entra-workload", "token_type": "Bearer", "expires_in": int(c.expiresIn.Seconds())})
	case host == "169.254.169.254" && r.URL.Path == "/metadata/identity/oauth2/token":
		if r.Header.Get("Metadata") != "true" || r.Form.Get("resource") != "https://containerregistry.azure.net" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		writeJSON(w, map[string]any{"access_token": "entra-managed", "token_type": "Bearer", "expires_in": fmt.Sprint(int(c.expiresIn.Seconds())),
			"expires_on": fmt.Sprint(expiresOn.Unix()), "resource": "https://containerregistry.azure.net"})
	case strings.HasPrefix(host, "sts.") && r.Form.Get("Action") == "AssumeRoleWithWebIdentity":
		if r.Form.Get("WebIdentityToken") != "irsa-token" {
			http.Error(w, "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>
<Credentials><AccessKeyId>ASIASTANDIN</AccessKeyId><SecretAccessKey>secret</SecretAccessKey><SessionToken>session</SessionToken><Expiration>%s</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/moat/x</Arn><AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser>
</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>`, expiresOn.UTC().Format(time.RFC3339))
	case strings.HasPrefix(host, "api.ecr.") && r.Header.Get("X-Amz-Target") == "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken":
		if !strings.Contains(r.Header.Get("Authorization"), "Credential=ASIASTANDIN/") {
			http.Error(w, `{"__type":"UnrecognizedClientException"}`, http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		writeJSON(w, map[string]any{"authorizationData": []any{map[string]any{
			"authorizationToken": base64.StdEncoding.EncodeToString([]byte("AWS:" + c.ecrPassword)),
			"expiresAt":          float64(expiresOn.Unix()), "proxyEndpoint": "https://" + host}}})
	case host == "metadata.google.internal" && strings.HasSuffix(r.URL.Path, "/service-accounts/default/token"):
		if r.Header.Get("Metadata-Flavor") != "Google" {
			http.Error(w, "missing Metadata-Flavor", http.StatusForbidden)
			return
		}
		writeJSON(w, map[string]any{"access_token": c.googleToken, "expires_in": int(c.expiresIn.Seconds()), "token_type": "Bearer"})
	case host == "metadata.google.internal":
		w.Header().Set("Metadata-Flavor", "Google")
		fmt.Fprint(w, "ok")
	default:
		http.Error(w, "the stand-in does not serve "+endpoint, http.StatusNotFound)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	_ = json.NewEncoder(w).Encode(v)
}
