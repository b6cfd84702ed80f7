package credentials

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-containerregistry/pkg/authn"
)

// acrScope is the Entra ID audience of Azure Container Registry.
const acrScope = "https://containerregistry.azure.net/.default"

// acrUser is the user name ACR takes with a refresh token.
const acrUser = "00000000-0000-0000-0000-000000000000"

// azureDetected: AKS workload identity injects these into the pod.
func azureDetected() bool {
	return os.Getenv("AZURE_FEDERATED_TOKEN_FILE") != "" && os.Getenv("AZURE_CLIENT_ID") != "" && os.Getenv("AZURE_TENANT_ID") != ""
}

// azure gets an Entra ID token for ACR's audience and exchanges it at the
// registry for an ACR refresh token (ACR's documented /oauth2/exchange),
// which go-containerregistry then trades for access tokens per repository.
type azure struct {
	cred     azcore.TokenCredential
	kind     string
	tenant   string
	exchange *http.Client
	plain    func(string) bool
}

func newAzure(opts Options) (source, error) {
	var co azcore.ClientOptions
	if opts.Identity != nil {
		co.Transport = opts.Identity
	}
	a := &azure{exchange: &http.Client{Transport: opts.Transport}, plain: opts.PlainHTTP}
	if azureDetected() {
		a.kind, a.tenant = "Azure workload identity", os.Getenv("AZURE_TENANT_ID")
		cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: co})
		if err != nil {
			return nil, err
		}
		a.cred = cred
		return a, nil
	}
	a.kind = "Azure managed identity"
	mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
	if id := os.Getenv("AZURE_CLIENT_ID"); id != "" { // a user-assigned identity
		mo.ID = azidentity.ClientID(id)
	}
	cred, err := azidentity.NewManagedIdentityCredential(mo)
	if err != nil {
		return nil, err
	}
	a.cred = cred
	return a, nil
}

func (a *azure) name() string { return a.kind }

func (a *azure) hint() string {
	if a.kind == "Azure workload identity" {
		return "check the federated credential of the identity in AZURE_CLIENT_ID and give it the AcrPull role on the registry (docs/registries.md#aks)"
	}
	return "give the node's or the pod's managed identity the AcrPull role on the registry, or set up workload identity (docs/registries.md#aks)"
}

// scope: an ACR refresh token is for one registry.
func (a *azure) scope(host string) string { return host }

func (a *azure) fetch(ctx context.Context, host string) (Token, error) {
	aad, err := a.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{acrScope}})
	if err != nil {
		return Token{}, fmt.Errorf("asking Entra ID for a token: %w", errorLine(err))
	}
	form := url.Values{"grant_type": {"access_token"}, "service": {host}, "access_token": {aad.Token}}
	if a.tenant != "" {
		form.Set("tenant", a.tenant)
	}
	scheme := "https"
	if a.plain(host) {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+"://"+host+"/oauth2/exchange", strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := a.exchange.Do(req)
	if err != nil {
		return Token{}, fmt.Errorf("ACR token exchange: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The body is not quoted: it may echo what was sent.
		return Token{}, fmt.Errorf("ACR token exchange: the registry answered HTTP %d", resp.StatusCode)
	}
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil || out.RefreshToken == "" {
		return Token{}, errors.New("ACR token exchange: the answer holds no refresh token")
	}
	expires := aad.ExpiresOn
	if exp, ok := jwtExpiry(out.RefreshToken); ok {
		expires = exp
	}
	return Token{Auth: authn.AuthConfig{Username: acrUser, IdentityToken: out.RefreshToken}, Expires: expires}, nil
}

// jwtExpiry reads the exp claim of a JWT without verifying it: it only
// says when to fetch a new one, the registry verifies it.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil || c.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(c.Exp, 0), true
}

// errorLine keeps the first line of an SDK error: the Azure SDK's errors
// carry whole response dumps, which belong in no per-key answer.
func errorLine(err error) error {
	s, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
	return errors.New(s)
}
