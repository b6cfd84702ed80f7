// Package server serves Gatekeeper's external-data protocol over mutual TLS
// (/validate, /mutate) and the operations endpoints over plain HTTP on a
// separate port (/metrics, /healthz, /readyz).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/protocol"
)

// Options configure a Server.
type Options struct {
	Limits protocol.Limits
	// ValidateDeadline and MutateDeadline bound how long a request waits for
	// registries. Each must stay below the Provider's spec.timeout.
	ValidateDeadline time.Duration
	MutateDeadline   time.Duration
	// SkipClientVerify turns client-certificate verification off. For
	// development only; logged loudly.
	SkipClientVerify   bool
	CertReloadInterval time.Duration
	// ShutdownDelay keeps serving, not ready, after SIGTERM so endpoints can
	// drop the pod before connections close.
	ShutdownDelay   time.Duration
	ShutdownTimeout time.Duration
}

// Server is the provider's HTTP side.
type Server struct {
	opts     Options
	svc      *lookup.Service
	certs    *mtls.Reloader
	metrics  *metrics.Metrics
	log      *slog.Logger
	stopping atomic.Bool
	bufs     sync.Pool
	// api serves the TLS listener: Handler, or another service's handler.
	api http.Handler
	// ready reports what keeps the service from being ready, if anything.
	ready func() error
	// nodes answers POST /nodes, and reports serves node scanners on a
	// listener of its own; both nil without node scanning.
	nodes   NodeAnswers
	reports *listener
}

// NodeAnswers answers node keys: an item body, and bad for a per-key error.
type NodeAnswers interface {
	Answer(ctx context.Context, key string) (body []byte, bad bool)
}

// listener is a mutual-TLS listener with its own client CA and handler.
type listener struct {
	addr    string
	ln      net.Listener
	handler http.Handler
	certs   *mtls.Reloader
}

// ReportsListener makes Serve take node reports on ln (tests).
func (s *Server) ReportsListener(ln net.Listener) { s.reports.ln = ln }

// ServeNodes adds POST /nodes, answered by n, and the node scanners'
// listener on addr: mutual TLS against certs' client CA (the node
// scanners' CA, not Gatekeeper's), serving reports. Call before Run.
func (s *Server) ServeNodes(n NodeAnswers, reports http.Handler, addr string, certs *mtls.Reloader) {
	s.nodes = n
	s.reports = &listener{addr: addr, handler: reports, certs: certs}
}

// NewService returns a Server that serves api instead of the provider's
// endpoints, with the same mutual TLS, ops endpoints and shutdown: the
// scanner service runs on it. ready, if set, gates /readyz.
func NewService(opts Options, api http.Handler, ready func() error, certs *mtls.Reloader, m *metrics.Metrics, log *slog.Logger) *Server {
	return &Server{opts: opts, api: api, ready: ready, certs: certs, metrics: m, log: log}
}

// New returns a Server.
func New(opts Options, svc *lookup.Service, certs *mtls.Reloader, m *metrics.Metrics, log *slog.Logger) *Server {
	return &Server{
		opts: opts, svc: svc, certs: certs, metrics: m, log: log,
		bufs: sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }},
	}
}

// Handler serves /validate and /mutate.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/validate", s.endpoint("validate", s.opts.ValidateDeadline, func(a *lookup.Answer) []byte { return a.Validate }))
	mux.Handle("/mutate", s.endpoint("mutate", s.opts.MutateDeadline, func(a *lookup.Answer) []byte { return a.Mutate }))
	known := "POST /validate or POST /mutate"
	if s.nodes != nil {
		e := s.endpoint("nodes", s.opts.ValidateDeadline, func(a *lookup.Answer) []byte { return a.Validate })
		e.look = s.lookNodes
		mux.Handle("/nodes", e)
		known = "POST /validate, POST /mutate or POST /nodes"
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeSystemError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %q: use %s", r.URL.Path, known))
	})
	return mux
}

// OpsHandler serves /metrics, /healthz and /readyz.
func (s *Server) OpsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case s.stopping.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !s.certs.Ready():
			http.Error(w, "certificates not loaded", http.StatusServiceUnavailable)
		case s.ready != nil && s.ready() != nil:
			http.Error(w, s.ready().Error(), http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	return mux
}

type endpoint struct {
	s        *Server
	name     string
	deadline time.Duration
	body     func(*lookup.Answer) []byte
	look     func(ctx context.Context, deadline time.Time, keys []string) []*lookup.Answer
	requests map[int]prometheus.Counter // pre-resolved labels: no map lookup per request
	keys     prometheus.Counter
	duration prometheus.Observer
}

func (s *Server) endpoint(name string, deadline time.Duration, body func(*lookup.Answer) []byte) *endpoint {
	e := &endpoint{s: s, name: name, deadline: deadline, body: body, look: s.lookImages,
		requests: map[int]prometheus.Counter{},
		keys:     s.metrics.Keys.WithLabelValues(name),
		duration: s.metrics.RequestDuration.WithLabelValues(name),
	}
	for _, c := range []int{200, 400, 404, 405, 413} {
		e.requests[c] = s.metrics.Requests.WithLabelValues(name, fmt.Sprint(c))
	}
	return e
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := e.serve(w, r, start)
	if c, ok := e.requests[code]; ok {
		c.Inc()
	} else {
		e.s.metrics.Requests.WithLabelValues(e.name, fmt.Sprint(code)).Inc()
	}
	e.duration.Observe(time.Since(start).Seconds())
}

func (e *endpoint) serve(w http.ResponseWriter, r *http.Request, start time.Time) int {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return writeSystemError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed: send a ProviderRequest with POST", r.Method))
	}
	bp := e.s.bufs.Get().(*[]byte)
	defer e.s.bufs.Put(bp)

	body, err := readBody(r, e.s.opts.Limits.MaxBodyBytes, (*bp)[:0])
	if err != nil {
		var re *protocol.RequestError
		if errors.As(err, &re) {
			return writeSystemError(w, re.Status, re.Msg)
		}
		return writeSystemError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
	}
	req, err := protocol.Decode(body, e.s.opts.Limits)
	if err != nil {
		re := err.(*protocol.RequestError)
		e.s.log.Info("request refused", "endpoint", e.name, "status", re.Status, "error", re.Msg, "remote", r.RemoteAddr)
		return writeSystemError(w, re.Status, re.Msg)
	}
	keys := req.Request.Keys
	e.keys.Add(float64(len(keys)))

	answers := e.look(r.Context(), start.Add(e.deadline), keys)

	var enc protocol.Encoder
	enc.Reset(body) // the request is decoded; reuse its storage
	for i, a := range answers {
		enc.Item(keys[i], e.body(a))
		if a.Reason != "" {
			e.s.metrics.KeyErrors.WithLabelValues(e.name, a.Reason).Inc()
		}
	}
	out := enc.Finish()
	*bp = out[:0]
	h := w.Header()
	h["Content-Type"] = jsonContentType
	// With its length known, net/http writes the body as it is, not in
	// chunks through its 2 KiB buffer.
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return http.StatusOK
}

var jsonContentType = []string{"application/json"}

func (s *Server) lookImages(ctx context.Context, deadline time.Time, keys []string) []*lookup.Answer {
	return s.svc.Lookup(ctx, deadline, keys)
}

// lookNodes answers node keys from the node reports, which are in memory
// or in the shared tier: no deadline applies beyond the tier's budget.
func (s *Server) lookNodes(ctx context.Context, _ time.Time, keys []string) []*lookup.Answer {
	out := make([]*lookup.Answer, len(keys))
	for i, k := range keys {
		body, bad := s.nodes.Answer(ctx, k)
		out[i] = &lookup.Answer{Validate: body}
		if bad {
			out[i].Reason = "bad_key"
		}
	}
	return out
}

// readBody reads the request body into buf, refusing more than limit bytes.
func readBody(r *http.Request, limit int64, buf []byte) ([]byte, error) {
	tooLarge := &protocol.RequestError{
		Status: http.StatusRequestEntityTooLarge,
		Msg:    fmt.Sprintf("request body larger than the limit of %d bytes (--max-request-bytes)", limit),
	}
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, tooLarge
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return nil, err
		}
	}
}

func writeSystemError(w http.ResponseWriter, code int, msg string) int {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(code)
	_, _ = w.Write(protocol.SystemError(msg))
	return code
}

// Run listens on addr (mutual TLS) and opsAddr (plain HTTP) until ctx ends,
// then shuts down gracefully.
func (s *Server) Run(ctx context.Context, addr, opsAddr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	opsLn, err := net.Listen("tcp", opsAddr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen on %s (--metrics-addr): %w", opsAddr, err)
	}
	return s.Serve(ctx, ln, opsLn)
}

// Serve is Run on listeners the caller made.
func (s *Server) Serve(ctx context.Context, ln, opsLn net.Listener) error {
	if r := s.reports; r != nil && r.ln == nil { // no ReportsListener: its own address
		rl, err := net.Listen("tcp", r.addr)
		if err != nil {
			return fmt.Errorf("listen on %s (--node-report-addr): %w", r.addr, err)
		}
		r.ln = rl
	}
	if err := s.certs.Load(); err != nil {
		s.log.Warn("certificates not loaded yet; not ready until they are", "error", err.Error())
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go s.certs.Watch(watchCtx, s.opts.CertReloadInterval)

	if s.opts.SkipClientVerify {
		s.metrics.ClientVerifyOff.Set(1)
		s.log.Warn("CLIENT CERTIFICATE VERIFICATION IS OFF (--insecure-skip-client-verify): any client can query this provider. Development only.")
	}
	tlsConf := s.certs.ServerConfig(s.opts.SkipClientVerify)
	handler := s.api
	if handler == nil {
		handler = s.Handler()
	}
	api := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConf,
		ErrorLog:          mtls.ErrorLog(s.log, s.metrics),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	ops := &http.Server{Handler: s.OpsHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: mtls.ErrorLog(s.log, s.metrics)}

	errc := make(chan error, 3)
	go func() { errc <- api.Serve(tls.NewListener(ln, tlsConf)) }()
	go func() { errc <- ops.Serve(opsLn) }()
	var reports *http.Server
	if r := s.reports; r != nil {
		if err := r.certs.Load(); err != nil {
			s.log.Warn("node scanners' CA not loaded yet; node reports are refused until it is", "error", err.Error())
		}
		go r.certs.Watch(watchCtx, s.opts.CertReloadInterval)
		conf := r.certs.ServerConfig(false)
		reports = &http.Server{
			Handler: r.handler, TLSConfig: conf, ErrorLog: mtls.ErrorLog(s.log, s.metrics),
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10,
		}
		go func() { errc <- reports.Serve(tls.NewListener(r.ln, conf)) }()
		s.log.Info("serving node reports", "addr", r.ln.Addr().String())
	}
	s.log.Info("serving", "addr", ln.Addr().String(), "opsAddr", opsLn.Addr().String(),
		"validateDeadline", s.opts.ValidateDeadline.String(), "mutateDeadline", s.opts.MutateDeadline.String())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		s.log.Error("server stopped", "error", err)
	}
	s.stopping.Store(true)
	if err == nil && s.opts.ShutdownDelay > 0 {
		s.log.Info("shutting down: not ready, still serving", "delay", s.opts.ShutdownDelay.String())
		time.Sleep(s.opts.ShutdownDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	s.log.Info("shutting down: finishing in-flight requests", "timeout", s.opts.ShutdownTimeout.String())
	e1 := api.Shutdown(sctx)
	e2 := ops.Shutdown(sctx)
	var e3 error
	if reports != nil {
		e3 = reports.Shutdown(sctx)
	}
	if err != nil {
		return err
	}
	return errors.Join(e1, e2, e3)
}
