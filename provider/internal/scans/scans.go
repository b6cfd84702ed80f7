// Package scans runs scans off the admission path: a bounded queue, a pool
// of workers, one scan per digest however many lookups ask, and a cache of
// reports with a lifetime per outcome. A lookup never waits for a scan
// longer than the budget it passes (zero by default): until the report is
// there it gets report_not_available.
package scans

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/moat-dev/moat/provider/internal/cache"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/scan"
)

// Options configure a Service.
type Options struct {
	Workers   int
	QueueSize int
	// ScanTimeout cancels a scan that runs longer; it becomes scan_failed.
	ScanTimeout time.Duration
	// ReportTTL is how long an accepted or rejected report is served.
	ReportTTL time.Duration
	// FailedTTL is how long a scan_failed report is served before the next
	// lookup scans again.
	FailedTTL time.Duration
	CacheSize int
	Policy    scan.Policy
}

// DefaultOptions are the defaults of `moat serve`.
func DefaultOptions() Options {
	return Options{Workers: 2, QueueSize: 100, ScanTimeout: 2 * time.Minute, ReportTTL: 6 * time.Hour,
		FailedTTL: 30 * time.Second, CacheSize: 10000, Policy: scan.DefaultPolicy()}
}

// Entry is a report and its pre-encoded form. It is never modified.
type Entry struct {
	Report scan.Report
	// Fragment is Report as JSON object members, without the braces.
	Fragment []byte
}

func newEntry(r scan.Report) *Entry { return &Entry{Report: r, Fragment: r.Fragment()} }

// Service schedules scans and caches their reports. Safe for concurrent use.
type Service struct {
	opts    Options
	scanner scan.Scanner
	cache   *cache.Cache[string, *Entry]
	metrics *metrics.Metrics
	log     *slog.Logger

	mu    sync.Mutex
	jobs  map[string]*job // queued or running, by digest
	queue chan *job

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type job struct {
	image   string
	key     string
	done    chan struct{}
	entry   *Entry // set before done closes
	pending *Entry
}

// New starts a Service with its workers; Close stops them.
func New(opts Options, s scan.Scanner, m *metrics.Metrics, log *slog.Logger) (*Service, error) {
	if opts.Workers < 1 || opts.QueueSize < 0 {
		return nil, fmt.Errorf("scans: %d workers and a queue of %d: need at least one worker and a queue of zero or more", opts.Workers, opts.QueueSize)
	}
	if err := opts.Policy.Validate(); err != nil {
		return nil, err
	}
	c, err := cache.New[string, *Entry](opts.CacheSize, nil)
	if err != nil {
		return nil, fmt.Errorf("scans: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc := &Service{opts: opts, scanner: s, cache: c, metrics: m, log: log,
		jobs: map[string]*job{}, queue: make(chan *job, opts.QueueSize), ctx: ctx, cancel: cancel}
	for range opts.Workers {
		svc.wg.Add(1)
		go svc.work()
	}
	return svc, nil
}

// Close cancels running scans and stops the workers.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Report returns the report for image, a digest reference
// ("registry/repo@sha256:…"). With no report cached it queues a scan (or
// joins the one running) and waits for it until `until` or until ctx ends;
// then it answers report_not_available.
func (s *Service) Report(ctx context.Context, image string, until time.Time) *Entry {
	key := digestOf(image)
	if key == "" {
		return newEntry(scan.Failed(scan.Errorf("unsupported", "%s: not a digest reference", image), time.Now()))
	}
	e, f := s.cache.Get(key)
	if f == cache.Fresh {
		// A report made with an older database is served while the image
		// is scanned again with the new one.
		if db := s.scanner.Database(); db != "" && e.Report.Database() != "" && e.Report.Database() != db {
			s.start(image, key)
		}
		return e
	}
	j, full := s.start(image, key)
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

// start queues a scan of image unless one is queued or running. It returns
// the job, or nil and a report_not_available entry when the queue is full.
func (s *Service) start(image, key string) (*job, *Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.jobs[key]; ok {
		return j, nil
	}
	j := &job{image: image, key: key, done: make(chan struct{}),
		pending: newEntry(scan.Pending(fmt.Sprintf("the scan of %s is queued or running; ask again later", key)))}
	select {
	case s.queue <- j:
	default:
		s.metrics.ScanQueueFull.Inc()
		return nil, newEntry(scan.Pending(fmt.Sprintf(
			"the scan queue is full (%d waiting); %s is scanned when a later lookup finds room", s.opts.QueueSize, key)))
	}
	s.jobs[key] = j
	s.metrics.ScansQueued.Inc()
	return j, nil
}

func (s *Service) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.queue:
			s.metrics.ScansQueued.Dec()
			s.run(j)
		}
	}
}

var errTimeout = errors.New("scan timed out")

// run scans one job and publishes its report: cached first, then the job
// is removed and its waiters are woken.
func (s *Service) run(j *job) {
	s.metrics.ScansRunning.Inc()
	defer s.metrics.ScansRunning.Dec()
	start := time.Now()
	ctx, cancel := context.WithTimeoutCause(s.ctx, s.opts.ScanTimeout, errTimeout)
	defer cancel()
	res, err := s.scan(ctx, j.image)
	s.metrics.ScanDuration.Observe(time.Since(start).Seconds())

	var r scan.Report
	ttl := s.opts.ReportTTL
	if err != nil {
		kind := scan.KindOf(err)
		s.metrics.ScanFailures.WithLabelValues(kind).Inc()
		s.log.Warn("scan failed", "image", j.image, "kind", kind, "error", err.Error(), "duration", time.Since(start).String())
		r, ttl = scan.Failed(err, time.Now()), s.opts.FailedTTL
	} else {
		r = s.opts.Policy.Judge(res)
		s.log.Info("scanned", "image", j.image, "status", r.Status, "findings", len(res.Findings), "duration", time.Since(start).String())
	}
	s.metrics.Scans.WithLabelValues(r.Status).Inc()
	j.entry = newEntry(r)
	if s.ctx.Err() == nil { // a scan cut short by Close is not a result
		s.cache.Add(j.key, j.entry, ttl, 0)
	}
	s.mu.Lock()
	delete(s.jobs, j.key)
	s.mu.Unlock()
	close(j.done)
}

// scan runs the scanner, but returns at the timeout even if the scanner
// does not: a scanner that ignores its context keeps its goroutine, not
// the worker.
func (s *Service) scan(ctx context.Context, image string) (res scan.Result, err error) {
	type out struct {
		res scan.Result
		err error
	}
	ch := make(chan out, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("scanner panicked", "image", image, "panic", fmt.Sprint(p))
				ch <- out{err: scan.Errorf("scanner", "%s: internal scanner error", image)}
			}
		}()
		r, err := s.scanner.Scan(ctx, image)
		ch <- out{r, err}
	}()
	select {
	case o := <-ch:
		if o.err != nil && errors.Is(context.Cause(ctx), errTimeout) {
			return o.res, scan.Errorf("timeout", "%s: the scan took longer than %s and was cancelled", image, s.opts.ScanTimeout)
		}
		return o.res, o.err
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), errTimeout) {
			return scan.Result{}, scan.Errorf("timeout", "%s: the scan took longer than %s and was cancelled", image, s.opts.ScanTimeout)
		}
		return scan.Result{}, scan.Errorf("unavailable", "%s: the scanner is shutting down", image)
	}
}

// digestOf returns the "sha256:…" of a digest reference: reports are
// shared by every repository and tag of one digest.
func digestOf(image string) string {
	i := strings.LastIndexByte(image, '@')
	if i < 0 || !strings.HasPrefix(image[i+1:], "sha256:") || len(image)-i-1 != len("sha256:")+64 {
		return ""
	}
	return image[i+1:]
}
