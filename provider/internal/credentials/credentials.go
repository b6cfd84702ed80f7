// Package credentials is where registry credentials come from besides a
// mounted docker config file: image pull Secrets read through the
// Kubernetes API (cluster-wide ones, and each namespace's own for the
// lookups scoped to it), and the workload identities of the clouds (Azure
// Container Registry through Microsoft Entra, ECR through the AWS default
// credential chain, Artifact Registry and GCR through Google's default
// credentials). Each identity is asked only about the registry hosts it
// serves, and its tokens are cached and refreshed in the background before
// they expire, so a lookup pays a token exchange only for the first pull
// from a registry.
package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Modes of an identity.
const (
	// Auto uses the identity when the platform injected its settings into
	// the environment (AKS workload identity, EKS IRSA or Pod Identity, a
	// Google credentials file).
	Auto = "auto"
	// On uses it whatever the environment says (for Azure: workload
	// identity when configured, else the managed identity; for Google:
	// the metadata server of GKE workload identity).
	On = "on"
	// Off never uses it.
	Off = "off"
)

// Options choose the identities.
type Options struct {
	// Azure, AWS and GCP are Auto, On or Off; empty is Off.
	Azure, AWS, GCP string
	// AzureHosts, AWSHosts and GCPHosts are the registry hosts each serves,
	// as path.Match patterns ("*.azurecr.io"); empty: the cloud's own.
	AzureHosts, AWSHosts, GCPHosts []string
	// Transport carries the token exchanges with registries.
	Transport http.RoundTripper
	// Identity carries the calls to identity endpoints (Entra ID, STS,
	// ECR); nil: each SDK's own client. Google's metadata server is
	// reached by its own client.
	Identity *http.Client
	// PlainHTTP reports the registry hosts reached over plain HTTP.
	PlainHTTP func(host string) bool
	// Now is the clock; nil: time.Now.
	Now func() time.Time

	// PullSecrets are image pull Secrets ("namespace/name") read through
	// the Kubernetes API for every registry; PullSecretsOf is a
	// ServiceAccount ("namespace/name") whose imagePullSecrets are read.
	PullSecrets   []string
	PullSecretsOf string
	// Namespaces are those whose own pull Secrets and ServiceAccounts serve
	// their namespaced keys (All: every namespace); empty: none.
	Namespaces []string
	// Kubeconfig reaches the API server for them; empty: the pod's own
	// (in-cluster) configuration.
	Kubeconfig string
}

// NamespaceCredentials watches the namespaces opts name, or is nil when
// they name none.
func NamespaceCredentials(opts Options, log *slog.Logger) (*Namespaces, error) {
	if len(opts.Namespaces) == 0 {
		return nil, nil
	}
	client, err := KubeClient(opts.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// The watches last as long as the process.
	return WatchNamespaces(context.Background(), client, opts.Namespaces, log)
}

// Default host patterns of each cloud.
var (
	DefaultAzureHosts = []string{"*.azurecr.io", "*.azurecr.cn", "*.azurecr.us"}
	DefaultAWSHosts   = []string{"*.dkr.ecr.*.amazonaws.com", "*.dkr.ecr.*.amazonaws.com.cn", "*.dkr.ecr-fips.*.amazonaws.com"}
	DefaultGCPHosts   = []string{"gcr.io", "*.gcr.io", "*-docker.pkg.dev"}
)

// Error is a credential that could not be had: it names the registry, the
// source tried and what to configure, never a secret.
type Error struct {
	Host   string
	Source string
	Err    error
	Hint   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("no credentials for registry %s from %s: %v; %s", e.Host, e.Source, e.Err, e.Hint)
}

func (e *Error) Unwrap() error { return e.Err }

// Token is a credential and when it ends.
type Token struct {
	Auth    authn.AuthConfig
	Expires time.Time
}

// source is one identity.
type source interface {
	// name says which identity this is, in errors and logs.
	name() string
	// hint says what to configure when it fails.
	hint() string
	// scope is the cache key of host's token: hosts with one scope share
	// a token.
	scope(host string) string
	// fetch gets a new token for host.
	fetch(ctx context.Context, host string) (Token, error)
}

// Keychains are the keychains opts turn on: the pull Secrets first, then
// the identities, each scoped to its hosts, in the order Azure, AWS, Google.
func Keychains(opts Options, log *slog.Logger) ([]authn.Keychain, error) {
	var out []authn.Keychain
	if len(opts.PullSecrets) > 0 || opts.PullSecretsOf != "" {
		client, err := KubeClient(opts.Kubeconfig)
		if err != nil {
			return nil, err
		}
		// The watches last as long as the process.
		ps, err := WatchPullSecrets(context.Background(), client, opts.PullSecrets, opts.PullSecretsOf, log)
		if err != nil {
			return nil, err
		}
		out = append(out, ps)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PlainHTTP == nil {
		opts.PlainHTTP = func(string) bool { return false }
	}
	type maker struct {
		flag, mode string
		hosts      []string
		defaults   []string
		detected   func() bool
		make       func(Options) (source, error)
	}
	for _, m := range []maker{
		{"--azure-identity", opts.Azure, opts.AzureHosts, DefaultAzureHosts, azureDetected, newAzure},
		{"--aws-identity", opts.AWS, opts.AWSHosts, DefaultAWSHosts, awsDetected, newAWS},
		{"--gcp-identity", opts.GCP, opts.GCPHosts, DefaultGCPHosts, gcpDetected, newGCP},
	} {
		switch m.mode {
		case Off, "":
			continue
		case Auto:
			if !m.detected() {
				continue
			}
		case On:
		default:
			return nil, fmt.Errorf("%s %q: want auto, on or off", m.flag, m.mode)
		}
		hosts := m.hosts
		if len(hosts) == 0 {
			hosts = m.defaults
		}
		for _, h := range hosts {
			if err := CheckHostPattern(h); err != nil {
				return nil, fmt.Errorf("%s: %w", m.flag, err)
			}
		}
		src, err := m.make(opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.flag, err)
		}
		log.Info("registry identity on", "identity", src.name(), "hosts", strings.Join(hosts, ","))
		out = append(out, newKeychain(src, hosts, opts.Now, log))
	}
	return out, nil
}

// CheckHostPattern refuses what cannot be a registry host pattern.
func CheckHostPattern(p string) error {
	if _, err := path.Match(p, ""); err != nil || p == "" || p == "*" || strings.ContainsAny(p, "/@ ") {
		return fmt.Errorf("%q is not a registry host pattern (want e.g. *.azurecr.io; a bare * would send every registry to the identity)", p)
	}
	return nil
}

// RESTConfig is how to reach the API server: through kubeconfig, or
// in-cluster when it is empty.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("the Kubernetes API: %w (outside a cluster, name a kubeconfig with --kubeconfig)", err)
	}
	cfg.UserAgent = "moat"
	return cfg, nil
}

// KubeClient reaches the API server's core group through kubeconfig, or in-cluster.
func KubeClient(kubeconfig string) (rest.Interface, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	// A REST client of the core group that knows only its types: the
	// clientset (and its scheme of every API group) would add some 25 MB
	// to the binary for two kinds Moat reads.
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	return rest.RESTClientFor(cfg)
}

// refreshBefore is how long before its end a token is replaced, in the
// background while it is still in use.
const refreshBefore = 5 * time.Minute

// expiryMargin is the least life a token must have left to be handed out:
// a pull must not outlive its token.
const expiryMargin = 30 * time.Second

// retryAfter paces background refreshes that failed.
const retryAfter = 30 * time.Second

// keychain answers for the hosts of one source and for no other host: a
// source is never asked about a registry it does not serve.
type keychain struct {
	src   source
	hosts []string
	now   func() time.Time
	log   *slog.Logger

	flight singleflight.Group
	mu     sync.Mutex
	tokens map[string]*held
}

// held is a scope's token, and whether it was used since the last refresh
// (an unused one is left to expire).
type held struct {
	tok  Token
	used bool
}

func newKeychain(src source, hosts []string, now func() time.Time, log *slog.Logger) *keychain {
	return &keychain{src: src, hosts: hosts, now: now, log: log, tokens: map[string]*held{}}
}

// serves reports whether host matches one of the patterns.
func (k *keychain) serves(host string) bool {
	for _, p := range k.hosts {
		if ok, _ := path.Match(p, host); ok {
			return true
		}
	}
	return false
}

func (k *keychain) Resolve(t authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), t)
}

// ResolveContext returns the scope's cached token, or fetches one within
// ctx; for hosts it does not serve, Anonymous (the next keychain is asked).
func (k *keychain) ResolveContext(ctx context.Context, t authn.Resource) (authn.Authenticator, error) {
	host := t.RegistryStr()
	if !k.serves(host) {
		return authn.Anonymous, nil
	}
	scope := k.src.scope(host)
	k.mu.Lock()
	h := k.tokens[scope]
	if h != nil && k.now().Add(expiryMargin).Before(h.tok.Expires) {
		h.used = true
		k.mu.Unlock()
		return authn.FromConfig(h.tok.Auth), nil
	}
	k.mu.Unlock()
	ch := k.flight.DoChan(scope, func() (any, error) {
		// The fetch outlives a caller that gives up: the next one finds
		// its token.
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		return k.refresh(ctx, scope, host)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, &Error{Host: host, Source: k.src.name(), Err: r.Err, Hint: k.src.hint()}
		}
		return authn.FromConfig(r.Val.(Token).Auth), nil
	case <-ctx.Done():
		return nil, &Error{Host: host, Source: k.src.name(), Err: fmt.Errorf("no token before the deadline: %w", context.Cause(ctx)), Hint: k.src.hint()}
	}
}

// fetchTimeout bounds one token fetch, retries of the SDKs included.
const fetchTimeout = 30 * time.Second

// refresh fetches scope's token, keeps it, and schedules the next refresh
// before it ends.
func (k *keychain) refresh(ctx context.Context, scope, host string) (Token, error) {
	tok, err := k.src.fetch(ctx, host)
	if err != nil {
		return Token{}, err
	}
	// A library's own cache may hand back the token held, close to its
	// end: it is used until it ends.
	if !tok.Expires.After(k.now()) {
		return Token{}, errors.New("the token it gave has already expired")
	}
	k.mu.Lock()
	k.tokens[scope] = &held{tok: tok, used: true}
	k.mu.Unlock()
	k.schedule(scope, host, tok.Expires)
	return tok, nil
}

// schedule refreshes scope's token in the background shortly before
// expires, if it was used since; a failed refresh is tried again while the
// old token lasts.
func (k *keychain) schedule(scope, host string, expires time.Time) {
	wait := expires.Sub(k.now()) - refreshBefore
	if lifetime := expires.Sub(k.now()); wait < lifetime/2 {
		wait = max(lifetime/2, time.Second) // short-lived tokens: halfway through
	}
	time.AfterFunc(wait, func() { k.background(scope, host, expires) })
}

func (k *keychain) background(scope, host string, expires time.Time) {
	k.mu.Lock()
	h := k.tokens[scope]
	if h == nil || !h.tok.Expires.Equal(expires) || !h.used {
		if h != nil && h.tok.Expires.Equal(expires) {
			delete(k.tokens, scope) // unused: the next lookup fetches anew
		}
		k.mu.Unlock()
		return
	}
	h.used = false
	k.mu.Unlock()
	_, err, _ := k.flight.Do(scope, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		return k.refresh(ctx, scope, host)
	})
	if err != nil {
		k.log.Warn("registry token refresh failed; the current token is used while it lasts", "identity", k.src.name(), "registry", host, "error", err.Error())
		if left := expires.Sub(k.now()); left > retryAfter {
			k.mu.Lock()
			if h := k.tokens[scope]; h != nil {
				h.used = true
			}
			k.mu.Unlock()
			time.AfterFunc(retryAfter, func() { k.background(scope, host, expires) })
		}
	}
}
