package shared

import (
	"log/slog"
	"sync"
	"time"

	"github.com/moat-dev/moat/provider/internal/metrics"
)

// failuresToOpen consecutive failures open the breaker: one slow call is
// not an outage, three in a row are.
const failuresToOpen = 3

// breaker stops paying the budget on every call while Redis is
// unreachable: open, calls are skipped; after the cooldown one call probes,
// and its success closes the breaker again.
type breaker struct {
	cooldown time.Duration
	m        *metrics.SharedMetrics
	log      *slog.Logger

	mu       sync.Mutex
	failures int
	open     bool
	probing  bool
	until    time.Time
}

func newBreaker(cooldown time.Duration, m *metrics.SharedMetrics, log *slog.Logger) *breaker {
	return &breaker{cooldown: cooldown, m: m, log: log}
}

func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || time.Now().Before(b.until) {
		return false
	}
	b.probing = true // this call is the probe
	return true
}

func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = 0
	if b.open {
		b.open, b.probing = false, false
		b.m.BreakerOpen.Set(0)
		b.log.Info("shared state: Redis is reachable again; answers use the shared tier")
	}
}

func (b *breaker) failure(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.open {
		b.probing = false
		b.until = time.Now().Add(b.cooldown)
		return
	}
	if b.failures >= failuresToOpen {
		b.open, b.until = true, time.Now().Add(b.cooldown)
		b.m.BreakerOpen.Set(1)
		b.log.Warn("shared state: Redis is unreachable; answering from this replica alone until it returns",
			"error", err.Error(), "probe_every", b.cooldown.String())
	}
}
