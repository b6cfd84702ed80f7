// Package lookup answers image keys from the cache and resolves the rest.
//
// Admission never waits on a registry longer than the request deadline: a
// miss starts a resolution (one per canonical reference, however many
// requests ask), the request waits for it until its deadline, and a
// resolution still running then goes on in the background and fills the
// cache for the next call.
package lookup

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/cache"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/protocol"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/resolve"
)

// Resolver resolves a tag to a digest; *resolve.Resolver is the real one.
type Resolver interface {
	Resolve(ctx context.Context, ref reference.Ref) (resolve.Result, error)
}

// Options configure a Service.
type Options struct {
	CacheSize int
	// DigestTTL is how long a resolved digest is served.
	DigestTTL time.Duration
	// ErrorTTL is how long a failed resolution is served before the next try.
	ErrorTTL time.Duration
	// StaleWhileRevalidate serves an expired digest for this long while a
	// refresh runs (0: off). A refresh that fails keeps the stale digest
	// until this window closes.
	StaleWhileRevalidate time.Duration
	// ResolveTimeout bounds one resolution, which may outlive the request.
	ResolveTimeout time.Duration
	// Shared is the tier the replicas share (package shared), or nil: a
	// digest one replica resolved is every replica's for DigestTTL.
	Shared checks.Store
}

// Answer is the pre-encoded answer for one key, shared by every request
// that asks for it while it is cached. It is never modified.
type Answer struct {
	// Validate and Mutate are the item bodies (`"value":…` or `"error":…`)
	// for the two endpoints.
	Validate []byte
	Mutate   []byte
	// Reason is empty for a value, else a short label of the error.
	Reason string
	// Image is the digest reference to scan ("repo@sha256:…"); empty for
	// errors.
	Image string
	// scope is the credentials of a namespaced key, for its checks' fetches.
	scope *credentials.Scope
	// last remembers this answer joined with the last check outcomes it
	// was given, so unchanged outcomes cost no new allocation.
	last atomic.Pointer[joined]
}

type joined struct {
	entries []*checks.Entry
	answer  *Answer
}

// Checks gives the outcome of a check of a digest reference (a scan, a
// signature check); *checks.Service is the real one.
type Checks interface {
	Get(ctx context.Context, image string, until time.Time) *checks.Entry
}

// Service answers keys. It is safe for concurrent use.
type Service struct {
	opts      Options
	resolver  Resolver
	cache     *cache.Cache[string, *Answer]
	flight    singleflight.Group
	metrics   *metrics.Metrics
	log       *slog.Logger
	now       func() time.Time
	checks    []Checks
	checkWait time.Duration
}

// AddChecks adds the outcome of each check to every value: a lookup waits
// up to wait (inside its own deadline) for checks that are not done.
func (s *Service) AddChecks(wait time.Duration, cs ...Checks) {
	s.checks, s.checkWait = append(s.checks, cs...), wait
}

// New returns a Service.
func New(opts Options, r Resolver, m *metrics.Metrics, log *slog.Logger) (*Service, error) {
	c, err := cache.New[string, *Answer](opts.CacheSize, func() { m.CacheEvictions.Inc() })
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	m.SetCacheLen(c.Len)
	return &Service{opts: opts, resolver: r, cache: c, metrics: m, log: log, now: time.Now}, nil
}

// Lookup answers keys, in order, waiting for resolutions until deadline or
// until ctx ends. Every key gets an answer.
func (s *Service) Lookup(ctx context.Context, deadline time.Time, keys []string) []*Answer {
	out := make([]*Answer, len(keys))
	var waits []wait
	// Spellings of one image in one batch share one resolution: a
	// resolution that ended before the loop reached the next spelling
	// would otherwise start another.
	started := map[string]int{} // canonical reference -> index in waits
	var spellings []spelling
	var hits, stale int
	now := s.cache.Now()
	for i, k := range keys {
		a, f := s.cache.GetAt(k, now)
		switch f {
		case cache.Fresh:
			out[i] = a
			hits++
			continue
		case cache.Stale:
			out[i] = a
			stale++
			s.refresh(k)
			continue
		}
		canonical := ""
		if ref, scope, err := ParseKey(k); err == nil {
			canonical = flightKey(ref, scope)
		}
		if j, ok := started[canonical]; ok && canonical != "" {
			spellings = append(spellings, spelling{index: i, key: k, of: j})
			continue
		}
		if a, ch := s.start(k); a != nil {
			out[i] = a
		} else {
			started[canonical] = len(waits)
			waits = append(waits, wait{index: i, key: k, ch: ch})
		}
	}
	s.metrics.CacheHits.Add(float64(hits))
	s.metrics.CacheStaleHits.Add(float64(stale))
	s.metrics.CacheMisses.Add(float64(len(keys) - hits - stale))
	if len(waits) > 0 {
		s.await(ctx, deadline, out, waits)
	}
	for _, sp := range spellings {
		a := out[waits[sp.of].index]
		if a.Reason == "pending" {
			a = pending(sp.key)
		} else {
			s.cache.Add(sp.key, a, s.ttl(a), s.opts.StaleWhileRevalidate)
		}
		out[sp.index] = a
	}
	if len(s.checks) > 0 {
		s.addChecks(ctx, deadline, out)
	}
	return out
}

// await fills out from the resolutions in waits until deadline.
func (s *Service) await(ctx context.Context, deadline time.Time, out []*Answer, waits []wait) {

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	expired := false
	for _, w := range waits {
		if !expired {
			select {
			case a := <-w.ch:
				out[w.index] = a
				continue
			case <-timer.C:
				expired = true
			case <-ctx.Done():
				expired = true
			}
		}
		// Take an answer that arrived meanwhile; otherwise say it is pending.
		select {
		case a := <-w.ch:
			out[w.index] = a
		default:
			out[w.index] = pending(w.key)
		}
	}
}

// addChecks appends each check's outcome for the digest to its value. The
// mutate body is kept as it is; asking at mutation starts the checks early.
func (s *Service) addChecks(ctx context.Context, deadline time.Time, out []*Answer) {
	until := s.now().Add(s.checkWait)
	if until.After(deadline) {
		until = deadline
	}
	var buf [4]*checks.Entry // no allocation for the usual one or two checks
	for i, a := range out {
		if a.Image == "" {
			continue
		}
		es := buf[:0]
		for _, c := range s.checks {
			es = append(es, c.Get(credentials.WithScope(ctx, a.scope), a.Image, until))
		}
		if j := a.last.Load(); j != nil && slices.Equal(j.entries, es) {
			out[i] = j.answer
			continue
		}
		n := len(a.Validate)
		for _, e := range es {
			n += len(e.Fragment) + 1
		}
		v := make([]byte, 0, n)
		v = append(v, a.Validate[:len(a.Validate)-1]...) // without the value's closing brace
		for _, e := range es {
			v = append(v, ',')
			v = append(v, e.Fragment...)
		}
		v = append(v, '}')
		out[i] = &Answer{Validate: v, Mutate: a.Mutate, Image: a.Image}
		a.last.Store(&joined{entries: slices.Clone(es), answer: out[i]})
	}
}

type wait struct {
	index int
	key   string
	ch    <-chan *Answer
}

// spelling is keys[index], another spelling of the image waits[of] resolves.
type spelling struct {
	index int
	key   string
	of    int
}

// start answers k at once when no registry is needed (bad reference,
// pinned digest), else starts or joins its resolution and returns a channel
// that yields the answer.
func (s *Service) start(k string) (*Answer, <-chan *Answer) {
	ref, scope, err := ParseKey(k)
	if err != nil {
		a := errorAnswer("invalid_reference", err.Error())
		s.cache.Add(k, a, 0, 0) // a bad key stays bad
		return a, nil
	}
	// A pinned key needs no registry, but a namespaced one proves its
	// namespace can pull the digest: another namespace's pull must not
	// vouch for it.
	if ref.IsPinned() && scope == nil {
		a := pinnedAnswer(k, ref)
		s.cache.Add(k, a, 0, 0) // a digest never moves
		return a, nil
	}
	res := s.flight.DoChan(flightKey(ref, scope), s.resolveFunc(k, ref, scope, false))
	ch := make(chan *Answer, 1)
	go func() {
		r := <-res
		a := r.Val.(*Answer)
		// The resolution cached itself under the key that started it; a
		// request that spelt the image differently caches it under its own.
		s.cache.Add(k, a, s.ttl(a), s.opts.StaleWhileRevalidate)
		ch <- a
	}()
	return nil, ch
}

// refresh re-resolves a stale key in the background.
func (s *Service) refresh(k string) {
	ref, scope, err := ParseKey(k)
	if err != nil {
		return
	}
	s.flight.DoChan(flightKey(ref, scope), s.resolveFunc(k, ref, scope, true))
}

func (s *Service) ttl(a *Answer) time.Duration {
	if a.Reason != "" {
		return s.opts.ErrorTTL
	}
	return s.opts.DigestTTL
}

// resolveFunc asks the registry and caches the answer under k before the
// flight ends, so no request can miss between the two.
func (s *Service) resolveFunc(k string, ref reference.Ref, scope *credentials.Scope, refresh bool) func() (any, error) {
	return func() (v any, _ error) {
		s.metrics.InflightResolution.Inc()
		defer s.metrics.InflightResolution.Dec()
		defer func() {
			if p := recover(); p != nil { // never let one key take the process down
				s.log.Error("digest resolution panicked", "reference", ref.String(), "panic", fmt.Sprint(p))
				v = errorAnswer("internal", fmt.Sprintf("%s: internal error while resolving the digest", ref))
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.ResolveTimeout)
		defer cancel()
		ctx = credentials.WithScope(ctx, scope)
		if a, left := s.sharedDigest(ctx, ref, scope); a != nil {
			s.cache.Add(k, a, left, s.opts.StaleWhileRevalidate)
			return a, nil
		}
		start := s.now()
		res, err := s.resolver.Resolve(ctx, ref)
		var a *Answer
		if err != nil {
			reason := "other"
			if re, ok := err.(*resolve.Error); ok {
				reason = re.Reason
			}
			s.metrics.Resolutions.WithLabelValues("error").Inc()
			s.log.Warn("digest resolution failed", "reference", ref.String(), "reason", reason, "error", err.Error(), "duration", s.now().Sub(start).String())
			a = errorAnswer(reason, err.Error())
			if refresh {
				// Keep serving the stale digest until its window closes;
				// only requests that joined this flight see the error.
				return a, nil
			}
		} else {
			s.metrics.Resolutions.WithLabelValues("resolved").Inc()
			s.log.Debug("digest resolved", "reference", ref.String(), "digest", res.Digest, "duration", s.now().Sub(start).String())
			at := s.now()
			a = resolvedAnswer(ref, res)
			a.scope = scope
			s.storeDigest(ctx, ref, scope, res, at)
		}
		s.cache.Add(k, a, s.ttl(a), s.opts.StaleWhileRevalidate)
		return a, nil
	}
}

// sharedDigest is the resolution another replica stored for ref, and what
// is left of its life; nil when there is none.
func (s *Service) sharedDigest(ctx context.Context, ref reference.Ref, scope *credentials.Scope) (*Answer, time.Duration) {
	if s.opts.Shared == nil {
		return nil, 0
	}
	b, left, ok := s.opts.Shared.Get(ctx, "digest:"+flightKey(ref, scope))
	if !ok {
		return nil, 0
	}
	var d sharedResolution
	if err := json.Unmarshal(b, &d); err != nil || !isDigest(ref, d.Digest) {
		s.log.Warn("shared state: a stored digest is ignored", "reference", ref.String())
		return nil, 0
	}
	if _, err := time.Parse(time.RFC3339, d.ResolvedAt); err != nil {
		s.log.Warn("shared state: a stored digest is ignored", "reference", ref.String())
		return nil, 0
	}
	s.metrics.Resolutions.WithLabelValues("shared").Inc()
	a := resolvedAnswer(ref, resolve.Result{Digest: d.Digest, MediaType: d.MediaType})
	a.scope = scope
	return a, left
}

// storeDigest shares a resolution for DigestTTL.
func (s *Service) storeDigest(ctx context.Context, ref reference.Ref, scope *credentials.Scope, res resolve.Result, at time.Time) {
	if s.opts.Shared == nil {
		return
	}
	b, err := json.Marshal(sharedResolution{Digest: res.Digest, MediaType: res.MediaType, ResolvedAt: at.UTC().Format(time.RFC3339)})
	if err == nil {
		s.opts.Shared.Set(ctx, "digest:"+flightKey(ref, scope), b, s.opts.DigestTTL)
	}
}

// sharedResolution is a resolution as the replicas share it.
type sharedResolution struct {
	Digest     string `json:"digest"`
	MediaType  string `json:"mediaType,omitempty"`
	ResolvedAt string `json:"resolvedAt"`
}

// isDigest reports whether d is a digest ref can be pinned to, by the
// parser every key goes through.
func isDigest(ref reference.Ref, d string) bool {
	p, err := reference.Parse(ref.Pinned(d))
	return err == nil && p.Digest == d
}

func resolvedAnswer(ref reference.Ref, res resolve.Result) *Answer {
	pinned := ref.Pinned(res.Digest)
	v, err := protocol.ValueBody(answer.Resolution{Schema: answer.Schema, Digest: res.Digest})
	if err != nil { // a struct of strings always encodes
		return errorAnswer("internal", err.Error())
	}
	m, _ := protocol.ValueBody(pinned)
	return &Answer{Validate: v, Mutate: m, Image: ref.Repository + "@" + res.Digest}
}

// pinnedAnswer answers a key that already names a digest: nothing to
// resolve, and mutation returns the key unchanged.
func pinnedAnswer(k string, ref reference.Ref) *Answer {
	v, err := protocol.ValueBody(answer.Resolution{Schema: answer.Schema, Digest: ref.Digest})
	if err != nil {
		return errorAnswer("internal", err.Error())
	}
	m, _ := protocol.ValueBody(k)
	return &Answer{Validate: v, Mutate: m, Image: ref.Repository + "@" + ref.Digest}
}

func errorAnswer(reason, msg string) *Answer {
	b := protocol.ErrorBody(msg)
	return &Answer{Validate: b, Mutate: b, Reason: reason}
}

func pending(k string) *Answer {
	return errorAnswer("pending", fmt.Sprintf(
		"%s: digest resolution did not finish before this request's deadline; it goes on in the background and the next request gets its answer", k))
}
