// Package resolve asks registries which digest a tag points at now.
//
// It uses go-containerregistry's Puller.Head through the registry client (a
// HEAD request does not count against Docker Hub's pull limit; for a
// multi-arch image the answer is the index digest), retries only server
// failures, and turns registry errors into messages a person can act on.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/registry"
)

// Options configure a Resolver.
type Options struct {
	// SessionLifetime is how long registry sessions (tokens, pings, resolved
	// credentials) are reused before they are made anew.
	SessionLifetime time.Duration
}

// Result is what a registry says a tag points at.
type Result struct {
	Digest    string
	MediaType string
}

// Error is a failed resolution: Reason is a short label for metrics and
// logs; the message explains it to a person.
type Error struct {
	Reason string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Resolver resolves tags to digests. It is safe for concurrent use.
type Resolver struct {
	opts     Options
	registry *registry.Client
	metrics  *metrics.Metrics
	session  atomic.Pointer[session]
}

type session struct {
	// credentials is the generation of the registry client's credentials
	// the session was made with.
	credentials uint64
	puller      *remote.Puller
	expires     time.Time
}

// New returns a Resolver fetching through reg.
func New(opts Options, reg *registry.Client, m *metrics.Metrics) *Resolver {
	if opts.SessionLifetime <= 0 {
		opts.SessionLifetime = 5 * time.Minute
	}
	return &Resolver{opts: opts, registry: reg, metrics: m}
}

// retries retry only what a retry can fix, quickly: a 429 is not retried,
// the cache's failure lifetime paces the next try.
var retries = []remote.Option{
	remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
	remote.WithRetryBackoff(remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}),
}

// puller returns the current registry session, making a new one when the
// credentials changed (a pull Secret rotated or deleted) or the old has
// lived SessionLifetime, so rotated credentials of a mounted file are
// picked up and the per-repository session map does not grow forever.
func (r *Resolver) puller() (*remote.Puller, error) {
	gen := r.registry.CredentialsGeneration()
	if s := r.session.Load(); s != nil && s.credentials == gen && time.Now().Before(s.expires) {
		return s.puller, nil
	}
	p, err := remote.NewPuller(append(r.registry.Options(context.Background(), registry.Resolve), retries...)...)
	if err != nil {
		return nil, err
	}
	r.session.Store(&session{credentials: gen, puller: p, expires: time.Now().Add(r.opts.SessionLifetime)})
	return p, nil
}

// Resolve returns the digest ref's tag points at. ctx bounds the whole
// resolution, waiting for a per-host slot included.
func (r *Resolver) Resolve(ctx context.Context, ref reference.Ref) (Result, error) {
	host := ref.Registry
	nref, err := r.registry.Reference(ref.NameRef().String())
	if err != nil {
		return Result{}, &Error{Reason: "invalid", Msg: err.Error()}
	}
	var desc *v1.Descriptor
	if credentials.ScopeOf(ctx) != nil {
		// A namespaced lookup never shares a session (and the tokens it
		// keeps) with another scope.
		desc, err = remote.Head(nref, append(r.registry.Options(ctx, registry.Resolve), retries...)...)
	} else {
		var p *remote.Puller
		if p, err = r.puller(); err != nil {
			return Result{}, r.fail(host, &Error{Reason: "internal", Msg: err.Error()})
		}
		desc, err = p.Head(ctx, nref)
	}
	if err != nil {
		return Result{}, r.fail(host, classify(ctx, ref, err))
	}
	return Result{Digest: desc.Digest.String(), MediaType: string(desc.MediaType)}, nil
}

func (r *Resolver) fail(host string, e *Error) *Error {
	r.metrics.RegistryErrors.WithLabelValues(host, e.Reason).Inc()
	return e
}

func displayHost(h string) string {
	if h == name.DefaultRegistry {
		return "docker.io"
	}
	return h
}

// classify turns a registry failure into a reason and a message naming the
// reference, the registry and what to do.
func classify(ctx context.Context, ref reference.Ref, err error) *Error {
	host := displayHost(ref.Registry)
	what := ref.String()
	var terr *transport.Error
	var insecure *registry.InsecureError
	var busy *registry.BusyError
	var cred *credentials.Error
	switch {
	case errors.As(err, &cred):
		return &Error{Reason: "credentials", Msg: fmt.Sprintf("%s: %s", what, cred.Error())}
	case errors.As(err, &insecure):
		return &Error{Reason: "insecure_refused", Msg: insecure.Error()}
	case errors.As(err, &busy):
		return &Error{Reason: "timeout", Msg: fmt.Sprintf("%s: %s", ref.String(), busy.Error())}
	case errors.As(err, &terr):
		code := terr.StatusCode
		switch {
		case code == http.StatusNotFound:
			return &Error{Reason: "not_found", Msg: fmt.Sprintf("%s: not found in registry %s (HTTP 404): the tag or repository does not exist", what, host)}
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return &Error{Reason: "unauthorized", Msg: fmt.Sprintf("%s: registry %s refused access (HTTP %d): check the name, or give Moat pull credentials for it (--registry-config or a cloud identity: docs/registries.md)", what, host, code)}
		case code == http.StatusTooManyRequests:
			return &Error{Reason: "rate_limited", Msg: fmt.Sprintf("%s: registry %s is rate-limiting requests (HTTP 429 Too Many Requests); Moat retries after the failure lifetime (--error-ttl)", what, host)}
		case code >= 500:
			return &Error{Reason: "server_error", Msg: fmt.Sprintf("%s: registry %s failed (HTTP %d) after retries", what, host, code)}
		}
		return &Error{Reason: "http_" + fmt.Sprint(code), Msg: fmt.Sprintf("%s: registry %s answered HTTP %d: %s", what, host, code, terr.Error())}
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return &Error{Reason: "timeout", Msg: fmt.Sprintf("%s: registry %s did not answer before the resolution deadline (--resolve-timeout)", what, host)}
	}
	var nerr net.Error
	var operr *net.OpError
	if errors.As(err, &operr) || errors.As(err, &nerr) {
		return &Error{Reason: "unreachable", Msg: fmt.Sprintf("%s: cannot reach registry %s: %s", what, host, rootCause(err))}
	}
	return &Error{Reason: "other", Msg: fmt.Sprintf("%s: resolving the digest at registry %s failed: %s", what, host, err)}
}

// rootCause drops the URL-laden wrappers of net/http errors and keeps the
// part that says what went wrong ("connect: connection refused").
func rootCause(err error) string {
	var operr *net.OpError
	if errors.As(err, &operr) {
		return operr.Error()
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
