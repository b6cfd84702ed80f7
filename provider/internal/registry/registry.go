// Package registry is how Moat reaches registries, for every kind of fetch:
// digest resolution, image pulls for scans, signatures and attestations.
// One Client holds the credentials (keychains), the transport that refuses
// plain HTTP except to the hosts the operator listed, the per-host limit on
// requests in flight, the request counter and the user agent, so that no
// fetch can reach a registry another way.
package registry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/metrics"
)

// Purposes label requests in moat_registry_requests_total.
const (
	Resolve     = "resolve"
	Scan        = "scan"
	Signature   = "signature"
	Attestation = "attestation"
	// Credentials are token exchanges with registries (ACR's).
	Credentials = "credentials"
)

// Options configure a Client.
type Options struct {
	// PerHostConcurrency bounds requests in flight to one registry host,
	// from sending a request to receiving its response headers.
	PerHostConcurrency int
	// RegistryConfig is a docker config file (config.json or a mounted
	// .dockerconfigjson) read for credentials.
	RegistryConfig string
	// InsecureRegistries are hosts ("host:port") that may be reached over
	// plain HTTP. No other host is, even on a private or loopback address.
	InsecureRegistries []string
	// Transport is the base transport; http.DefaultTransport when nil.
	Transport http.RoundTripper
	// UserAgent is sent to registries.
	UserAgent string
	// Credentials are the pull Secrets read through the Kubernetes API and
	// the cloud identities (package credentials).
	Credentials credentials.Options
	// Log receives what the credential sources log; nil: discarded.
	Log *slog.Logger
}

// Client reaches registries. It is safe for concurrent use.
type Client struct {
	opts     Options
	metrics  *metrics.Metrics
	keychain authn.Keychain
	// namespaces serve namespaced lookups (nil: none are read), before
	// identities: the cloud identities, which hold no Secret.
	namespaces *credentials.Namespaces
	identities authn.Keychain
	// changing are the keychains whose content changes while Moat runs.
	changing []interface{ Generation() uint64 }
	insecure map[string]bool
	base     http.RoundTripper

	mu     sync.Mutex
	limits map[string]chan struct{}
}

// New returns a Client. PerHostConcurrency must be positive.
func New(opts Options, m *metrics.Metrics) (*Client, error) {
	if opts.PerHostConcurrency <= 0 {
		return nil, fmt.Errorf("registry: per-host concurrency must be positive, got %d", opts.PerHostConcurrency)
	}
	c := &Client{opts: opts, metrics: m, insecure: map[string]bool{}, base: opts.Transport, limits: map[string]chan struct{}{}}
	if c.base == nil {
		c.base = http.DefaultTransport
	}
	for _, h := range opts.InsecureRegistries {
		c.insecure[h] = true
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	// The file first, so an operator can override any other source for a
	// host; then the pull Secrets; then the identities, each asked only
	// about its own hosts; then the default keychain.
	var chain []authn.Keychain
	if opts.RegistryConfig != "" {
		chain = append(chain, fileKeychain{path: opts.RegistryConfig})
	}
	ids := opts.Credentials
	ids.Transport = c.Transport(Credentials)
	ids.PlainHTTP = func(host string) bool { return c.insecure[host] }
	sources, err := credentials.Keychains(ids, opts.Log)
	if err != nil {
		return nil, err
	}
	chain = append(chain, sources...)
	c.identities = authn.NewMultiKeychain(identitiesOnly(sources)...)
	for _, k := range sources {
		if g, ok := k.(interface{ Generation() uint64 }); ok {
			c.changing = append(c.changing, g)
		}
	}
	if c.namespaces, err = credentials.NamespaceCredentials(ids, opts.Log); err != nil {
		return nil, err
	}
	if c.namespaces != nil {
		c.changing = append(c.changing, c.namespaces)
	}
	c.keychain = authn.NewMultiKeychain(append(chain, authn.DefaultKeychain)...)
	return c, nil
}

// identitiesOnly drops the pull Secrets from keychains.
func identitiesOnly(kcs []authn.Keychain) []authn.Keychain {
	var out []authn.Keychain
	for _, k := range kcs {
		if _, secrets := k.(*credentials.PullSecrets); !secrets {
			out = append(out, k)
		}
	}
	return out
}

// CredentialsGeneration changes whenever credentials read through the
// Kubernetes API change: sessions that keep credentials start anew.
func (c *Client) CredentialsGeneration() uint64 {
	var g uint64
	for _, k := range c.changing {
		g += k.Generation()
	}
	return g
}

// Transport is the transport of requests for purpose: counted, limited per
// host, and refused over plain HTTP to hosts not listed as insecure.
func (c *Client) Transport(purpose string) http.RoundTripper {
	return &transport{client: c, purpose: purpose}
}

// Options are go-containerregistry's remote options for a fetch for
// purpose: this client's credentials, transport and user agent, and ctx.
// When ctx carries a credentials.Scope, only that namespace's pull Secrets
// and the cloud identities are used.
func (c *Client) Options(ctx context.Context, purpose string) []remote.Option {
	kc := c.keychain
	if s := credentials.ScopeOf(ctx); s != nil {
		// A namespace's own Secrets, then the identities: never a Secret
		// the namespace does not hold (a mounted file, a cluster-wide pull
		// Secret, a docker config may be another tenant's).
		if c.namespaces != nil {
			kc = authn.NewMultiKeychain(c.namespaces.Keychain(s), c.identities)
		} else {
			kc = c.identities
		}
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(c.Transport(purpose)),
		remote.WithUserAgent(c.opts.UserAgent),
	}
}

// Reference parses an image reference, marked for plain HTTP only when its
// host is listed as insecure. go-containerregistry chooses plain HTTP on its
// own for loopback and private addresses; the transport refuses that for
// hosts not listed.
func (c *Client) Reference(s string, opts ...name.Option) (name.Reference, error) {
	return parse(c, name.ParseReference, s, opts)
}

// Digest is Reference for a digest reference ("registry/repo@sha256:…").
func (c *Client) Digest(s string, opts ...name.Option) (name.Digest, error) {
	return parse(c, name.NewDigest, s, opts)
}

func parse[T interface{ Context() name.Repository }](c *Client, p func(string, ...name.Option) (T, error), s string, opts []name.Option) (T, error) {
	r, err := p(s, opts...)
	if err != nil || !c.insecure[r.Context().RegistryStr()] {
		return r, err
	}
	return p(s, append(opts, name.Insecure)...)
}

func (c *Client) slot(host string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.limits[host]
	if !ok {
		s = make(chan struct{}, c.opts.PerHostConcurrency)
		c.limits[host] = s
	}
	return s
}
