// Package metrics holds Moat's Prometheus collectors, registered on a
// registry of their own so tests can make as many as they like.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the collectors every part of the provider reports to.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // endpoint, code
	Keys            *prometheus.CounterVec   // endpoint
	KeyErrors       *prometheus.CounterVec   // endpoint, reason
	RequestDuration *prometheus.HistogramVec // endpoint

	CacheHits      prometheus.Counter
	CacheStaleHits prometheus.Counter
	CacheMisses    prometheus.Counter
	CacheEvictions prometheus.Counter
	CacheEntries   prometheus.GaugeFunc

	RegistryRequests *prometheus.CounterVec // host, method, purpose
	RegistryErrors   *prometheus.CounterVec // host, reason
	Resolutions      *prometheus.CounterVec // outcome

	HandshakeFailures  *prometheus.CounterVec // reason
	CertReloads        *prometheus.CounterVec // result
	ClientVerifyOff    prometheus.Gauge
	InflightResolution prometheus.Gauge

	// Scans and Signatures are the two kinds of checks (package checks).
	Scans      *CheckMetrics
	Signatures *CheckMetrics

	// Shared is the shared tier's (package shared).
	Shared *SharedMetrics
}

// SharedMetrics are the shared tier's collectors (package shared).
type SharedMetrics struct {
	Calls       *prometheus.CounterVec   // op, result
	Duration    *prometheus.HistogramVec // op
	Rejected    prometheus.Counter
	BreakerOpen prometheus.Gauge
}

func newSharedMetrics() *SharedMetrics {
	return &SharedMetrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_shared_calls_total",
			Help: "Calls to the shared tier (Redis) by op (get, set, lease, release) and result (hit, miss, ok, error, skipped while the breaker is open).",
		}, []string{"op", "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_shared_call_duration_seconds", Help: "Time a call to the shared tier took, by op.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}, []string{"op"}),
		Rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_shared_rejected_total", Help: "Values read from the shared tier and ignored: not authentic under the MAC key, malformed or expired.",
		}),
		BreakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_shared_breaker_open", Help: "1 while the shared tier is skipped because Redis is unreachable, else 0.",
		}),
	}
}

// CheckMetrics are one kind of check's collectors (see package checks).
type CheckMetrics struct {
	Done      *prometheus.CounterVec // status
	Failures  *prometheus.CounterVec // kind
	Duration  prometheus.Histogram
	Queued    prometheus.Gauge
	Running   prometheus.Gauge
	QueueFull prometheus.Counter
}

func newCheckMetrics(prefix, what string) *CheckMetrics {
	return &CheckMetrics{
		Done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_total", Help: "Finished " + what + ", by status.",
		}, []string{"status"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_failures_total", Help: what + " that could not be done, by kind (scans: database, pull, unsupported, scanner, timeout, unavailable, attestation).",
		}, []string{"kind"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: prefix + "_duration_seconds", Help: "Time " + what + " took.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		Queued:    prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_queued", Help: what + " waiting for a worker."}),
		Running:   prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_running", Help: what + " running now."}),
		QueueFull: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "_queue_full_total", Help: what + " not queued because the queue was full."}),
	}
}

func (c *CheckMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.Done, c.Failures, c.Duration, c.Queued, c.Running, c.QueueFull}
}

// New builds and registers the collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_requests_total", Help: "External-data requests by endpoint and HTTP status code.",
		}, []string{"endpoint", "code"}),
		Keys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_keys_total", Help: "Keys received by endpoint.",
		}, []string{"endpoint"}),
		KeyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_key_errors_total", Help: "Keys answered with an error, by endpoint and reason.",
		}, []string{"endpoint", "reason"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_request_duration_seconds",
			Help:    "Time from request received to response written.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"endpoint"}),
		CacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_cache_hits_total", Help: "Keys answered from the cache while fresh.",
		}),
		CacheStaleHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_cache_stale_hits_total", Help: "Keys answered from an expired entry while it was refreshed (stale-while-revalidate).",
		}),
		CacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_cache_misses_total", Help: "Keys not in the cache, or expired.",
		}),
		CacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_cache_evictions_total", Help: "Entries pushed out of the cache to make room.",
		}),
		RegistryRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_registry_requests_total", Help: "HTTP requests sent to registries, by host, method and purpose (resolve, scan, signature, attestation).",
		}, []string{"host", "method", "purpose"}),
		RegistryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_registry_errors_total", Help: "Failed digest resolutions, by registry host and reason.",
		}, []string{"host", "reason"}),
		Resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_resolutions_total", Help: "Digest resolutions started, by outcome.",
		}, []string{"outcome"}),
		HandshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_tls_handshake_failures_total", Help: "Refused TLS connections, by reason.",
		}, []string{"reason"}),
		CertReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_certificate_reloads_total", Help: "Certificate and CA reloads, by result.",
		}, []string{"result"}),
		ClientVerifyOff: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_client_verification_disabled", Help: "1 when the development flag --insecure-skip-client-verify is set.",
		}),
		InflightResolution: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_resolutions_inflight", Help: "Digest resolutions running now.",
		}),
	}
	m.Scans = newCheckMetrics("moat_scans", "Scans")
	reg.MustRegister(m.Scans.collectors()...)
	m.Signatures = newCheckMetrics("moat_signature_checks", "Signature checks")
	reg.MustRegister(m.Signatures.collectors()...)
	m.Shared = newSharedMetrics()
	reg.MustRegister(m.Shared.Calls, m.Shared.Duration, m.Shared.Rejected, m.Shared.BreakerOpen)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.Keys, m.KeyErrors, m.RequestDuration,
		m.CacheHits, m.CacheStaleHits, m.CacheMisses, m.CacheEvictions,
		m.RegistryRequests, m.RegistryErrors, m.Resolutions,
		m.HandshakeFailures, m.CertReloads, m.ClientVerifyOff, m.InflightResolution,
	)
	return m
}

// SetCacheLen registers the gauge of cached entries once the cache exists.
func (m *Metrics) SetCacheLen(f func() int) {
	if m.CacheEntries != nil {
		return
	}
	m.CacheEntries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moat_cache_entries", Help: "Entries in the answer cache.",
	}, func() float64 { return float64(f()) })
	m.Registry.MustRegister(m.CacheEntries)
}
