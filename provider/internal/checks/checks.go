// Package checks runs slow checks of images (vulnerability scans,
// signature verification) off the admission path: a bounded queue, a pool
// of workers, one check per digest however many lookups ask, and a cache
// of outcomes with a lifetime each. A lookup never waits for a check longer
// than the budget it passes (zero by default): until the outcome is there
// it gets the check's pending answer.
package checks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/moat-dev/moat/provider/internal/cache"
	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/metrics"
)

// Check is one kind of check.
type Check interface {
	// Run checks image, a digest reference, until ctx ends.
	Run(ctx context.Context, image string) Outcome
	// Failed is the outcome of a check that could not run: it timed out, or
	// the service is shutting down.
	Failed(image string, err error) Outcome
	// Pending is the answer while the check is queued or running.
	Pending(reason string) []byte
	// Version identifies what outcomes depend on now (a database, a trust
	// configuration); an outcome of another version is checked again.
	// Empty when unknown.
	Version() string
}

// Outcome is a finished check.
type Outcome struct {
	// Fragment is the answer as JSON object members, without the braces.
	Fragment []byte
	// TTL is how long it is served; 0 or less means one second.
	TTL time.Duration
	// Version is Check.Version when the check ran.
	Version string
	// Status labels it in metrics; Kind labels a failure ("" for none).
	Status, Kind string
}

// Options configure a Service.
type Options struct {
	Workers   int
	QueueSize int
	// Timeout cancels a check that runs longer; it becomes Check.Failed.
	Timeout   time.Duration
	CacheSize int
	// Shared is the tier the replicas share (package shared), or nil.
	Shared Store
}

// Store is a tier the replicas of one install share: an outcome one
// replica stored is the outcome of all of them, and a lease makes one
// replica check a digest for all. Every failure of a Store reads as a miss.
type Store interface {
	Get(ctx context.Context, key string) (value []byte, left time.Duration, ok bool)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration)
	// Lease takes key for ttl unless another holder has it (ok false);
	// err is set when the store cannot say.
	Lease(ctx context.Context, key string, ttl time.Duration) (release func(), ok bool, err error)
}

// leasePoll is how often a replica that waits for another's check looks
// for its outcome.
const leasePoll = 250 * time.Millisecond

// Entry is an outcome (or a pending answer) as served. Never modified.
type Entry struct {
	Fragment []byte
	version  string
}

// Service schedules checks and caches their outcomes. Safe for concurrent
// use.
type Service struct {
	name string
	// keyBase starts the shared tier's keys of this kind of check.
	keyBase string
	opts    Options
	check   Check
	cache   *cache.Cache[string, *Entry]
	metrics *metrics.CheckMetrics
	log     *slog.Logger

	mu    sync.Mutex
	jobs  map[string]*job // queued or running, by digest
	queue chan *job

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type job struct {
	image string
	key   string
	// scope is the credentials of the lookup that started the job (nil:
	// the cluster-wide ones): any lookup that reaches a digest's check
	// resolved that digest with its own credentials, so it may join.
	scope   *credentials.Scope
	done    chan struct{}
	entry   *Entry // set before done closes
	pending *Entry
}

// New starts a Service with its workers; Close stops them. name ("scan",
// "signature check") is used in logs and messages.
func New(name string, opts Options, c Check, m *metrics.CheckMetrics, log *slog.Logger) (*Service, error) {
	if opts.Workers < 1 || opts.QueueSize < 0 || opts.Timeout <= 0 {
		return nil, fmt.Errorf("%s: %d workers, a queue of %d and a timeout of %s: need at least one worker, a queue of zero or more and a positive timeout",
			name, opts.Workers, opts.QueueSize, opts.Timeout)
	}
	ch, err := cache.New[string, *Entry](opts.CacheSize, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{name: name, keyBase: "check:" + strings.ReplaceAll(name, " ", "-") + ":", opts: opts, check: c, cache: ch, metrics: m, log: log,
		jobs: map[string]*job{}, queue: make(chan *job, opts.QueueSize), ctx: ctx, cancel: cancel}
	for range opts.Workers {
		s.wg.Add(1)
		go s.work()
	}
	return s, nil
}

// Close cancels running checks and stops the workers.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Get returns the outcome for image, a digest reference
// ("registry/repo@sha256:…"). With none cached it queues a check (or joins
// the one running) and waits for it until `until` or until ctx ends; then
// it answers the check's pending answer.
func (s *Service) Get(ctx context.Context, image string, until time.Time) *Entry {
	key := digestOf(image)
	if key == "" {
		return &Entry{Fragment: s.check.Failed(image, fmt.Errorf("%s: not a digest reference", image)).Fragment}
	}
	e, f := s.cache.Get(key)
	if f == cache.Fresh {
		// An outcome of an older version is served while the image is
		// checked again with the new one.
		if v := s.check.Version(); v != "" && e.version != "" && e.version != v {
			s.start(ctx, image, key)
		}
		return e
	}
	if e := s.fromShared(ctx, key); e != nil {
		return e
	}
	j, full := s.start(ctx, image, key)
	if j == nil {
		return full
	}
	if wait := time.Until(until); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-j.done:
			return j.entry
		case <-t.C:
		case <-ctx.Done():
		}
	}
	select {
	case <-j.done:
		return j.entry
	default:
		return j.pending
	}
}

// start queues a check of image unless one is queued or running. It
// returns the job, or nil and a pending entry when the queue is full.
func (s *Service) start(ctx context.Context, image, key string) (*job, *Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.jobs[key]; ok {
		return j, nil
	}
	j := &job{image: image, key: key, scope: credentials.ScopeOf(ctx), done: make(chan struct{}),
		pending: &Entry{Fragment: s.check.Pending(fmt.Sprintf("the %s of %s is queued or running; ask again later", s.name, key))}}
	select {
	case s.queue <- j:
	default:
		s.metrics.QueueFull.Inc()
		return nil, &Entry{Fragment: s.check.Pending(fmt.Sprintf(
			"the %s queue is full (%d waiting); %s is checked when a later lookup finds room", s.name, s.opts.QueueSize, key))}
	}
	s.jobs[key] = j
	s.metrics.Queued.Inc()
	return j, nil
}

func (s *Service) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.queue:
			s.metrics.Queued.Dec()
			s.run(j)
		}
	}
}

var errTimeout = errors.New("timed out")

// run checks one job and publishes its outcome: cached first, then the job
// is removed and its waiters are woken.
func (s *Service) run(j *job) {
	s.metrics.Running.Inc()
	defer s.metrics.Running.Dec()
	version := s.check.Version()
	if s.opts.Shared != nil {
		e, release := s.awaitShared(j.key)
		if e != nil {
			s.publish(j, e, 0)
			return
		}
		if release != nil {
			defer release()
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeoutCause(credentials.WithScope(s.ctx, j.scope), s.opts.Timeout, errTimeout)
	defer cancel()
	o := s.runCheck(ctx, j.image)
	s.metrics.Duration.Observe(time.Since(start).Seconds())
	s.metrics.Done.WithLabelValues(o.Status).Inc()
	if o.Kind != "" {
		s.metrics.Failures.WithLabelValues(o.Kind).Inc()
	}
	s.log.Info(s.name+" done", "image", j.image, "status", o.Status, "kind", o.Kind, "duration", time.Since(start).String())
	e := &Entry{Fragment: o.Fragment, version: o.Version}
	if s.ctx.Err() != nil { // a check cut short by Close is not an outcome
		s.publish(j, e, 0)
		return
	}
	ttl := o.TTL
	if ttl <= 0 {
		ttl = time.Second
	}
	if o.Version != "" {
		version = o.Version // the version the check ran under, if it says
	}
	if s.opts.Shared != nil && version != "" {
		s.opts.Shared.Set(s.ctx, s.sharedKey(version, j.key), o.Fragment, ttl)
		s.opts.Shared.Set(s.ctx, s.versionKey(), []byte(version), versionTTL)
	}
	s.publish(j, e, ttl)
}

// publish caches e for ttl (not at all when 0), removes the job and wakes
// its waiters.
func (s *Service) publish(j *job, e *Entry, ttl time.Duration) {
	j.entry = e
	if ttl > 0 {
		s.cache.Add(j.key, e, ttl, 0)
	}
	s.mu.Lock()
	delete(s.jobs, j.key)
	s.mu.Unlock()
	close(j.done)
}

// sharedKey names the outcome of a check of digest under version (a
// database, a policy, a trust): a new version never reads an outcome made
// under the old one.
func (s *Service) sharedKey(version, digest string) string {
	v := sha256.Sum256([]byte(version))
	return s.keyBase + hex.EncodeToString(v[:12]) + ":" + digest
}

// versionKey names the version the replicas last stored an outcome under:
// a replica that does not know its own yet (its database still loading)
// reads theirs, so a restart answers at once with the reports made before.
func (s *Service) versionKey() string {
	return s.keyBase + "version"
}

// versionTTL keeps the pointer well past any outcome's life.
const versionTTL = 7 * 24 * time.Hour

// fromShared is the outcome another replica stored for digest under the
// current version (or, while this replica has none yet, the replicas'
// last), cached here for what is left of its life; nil when there is none
// or no shared tier.
func (s *Service) fromShared(ctx context.Context, digest string) *Entry {
	if s.opts.Shared == nil {
		return nil
	}
	v := s.check.Version()
	if v == "" {
		b, _, ok := s.opts.Shared.Get(ctx, s.versionKey())
		if !ok {
			return nil
		}
		v = string(b)
	}
	frag, left, ok := s.opts.Shared.Get(ctx, s.sharedKey(v, digest))
	if !ok {
		return nil
	}
	e := &Entry{Fragment: frag, version: v}
	s.cache.Add(digest, e, left, 0)
	return e
}

// awaitShared makes one replica check digest for all: it returns the
// outcome another replica stored, or the release of the lease this replica
// took to check it (nil when the shared tier cannot be used: the check then
// runs here). While another replica holds the lease it waits for that
// replica's outcome, and takes the lease over when it expires (a replica
// that died). The lease is per digest whatever the version, so replicas
// that do not know theirs yet (a database loading) still check it once.
func (s *Service) awaitShared(digest string) (*Entry, func()) {
	key := s.keyBase + digest
	for {
		if e := s.fromShared(s.ctx, digest); e != nil {
			return e, nil
		}
		release, ok, err := s.opts.Shared.Lease(s.ctx, key, s.opts.Timeout+leaseMargin)
		if err != nil {
			return nil, nil
		}
		if ok {
			// The holder before may have stored its outcome and let go
			// between the two calls.
			if e := s.fromShared(s.ctx, digest); e != nil {
				release()
				return e, nil
			}
			return nil, release
		}
		select {
		case <-s.ctx.Done():
			return nil, nil
		case <-time.After(leasePoll):
		}
	}
}

// leaseMargin outlives the check's timeout, so a lease ends only after its
// holder has stored an outcome or died.
const leaseMargin = 10 * time.Second

// runCheck runs the check, but returns at the timeout even if the check
// does not: a check that ignores its context keeps its goroutine, not the
// worker.
func (s *Service) runCheck(ctx context.Context, image string) Outcome {
	ch := make(chan Outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error(s.name+" panicked", "image", image, "panic", fmt.Sprint(p))
				ch <- s.check.Failed(image, fmt.Errorf("%s: internal error in the %s", image, s.name))
			}
		}()
		ch <- s.check.Run(ctx, image)
	}()
	timedOut := func() Outcome {
		return s.check.Failed(image, &TimeoutError{fmt.Errorf("%s: the %s took longer than %s and was cancelled", image, s.name, s.opts.Timeout)})
	}
	select {
	case o := <-ch:
		if errors.Is(context.Cause(ctx), errTimeout) && ctx.Err() != nil && o.Kind != "" {
			return timedOut()
		}
		return o
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), errTimeout) {
			return timedOut()
		}
		return s.check.Failed(image, fmt.Errorf("%s: the %s service is shutting down", image, s.name))
	}
}

// TimeoutError is the error Failed gets for a check past its timeout.
type TimeoutError struct{ Err error }

func (e *TimeoutError) Error() string { return e.Err.Error() }
func (e *TimeoutError) Unwrap() error { return e.Err }

// digestOf returns the "sha256:…" of a digest reference: outcomes are
// shared by every repository and tag of one digest.
func digestOf(image string) string {
	i := strings.LastIndexByte(image, '@')
	if i < 0 || !strings.HasPrefix(image[i+1:], "sha256:") || len(image)-i-1 != len("sha256:")+64 {
		return ""
	}
	return image[i+1:]
}
