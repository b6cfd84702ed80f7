package resolve

import (
	"fmt"
	"net/http"

	"github.com/moat-dev/moat/provider/internal/metrics"
)

// countingTransport counts every registry request by host and refuses plain
// HTTP to hosts not listed as insecure. go-containerregistry falls back to
// HTTP on its own for loopback and private addresses; a digest fetched over
// plain HTTP could be forged by anyone on the path, so Moat allows it only
// where the operator said so.
type countingTransport struct {
	base     http.RoundTripper
	insecure map[string]bool
	metrics  *metrics.Metrics
}

type insecureError struct{ host string }

func (e *insecureError) Error() string {
	return fmt.Sprintf("registry %s would be reached over plain HTTP; Moat refuses that unless the host is listed in --insecure-registries", e.host)
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !t.insecure[req.URL.Host] {
		return nil, &insecureError{host: req.URL.Host}
	}
	t.metrics.RegistryRequests.WithLabelValues(req.URL.Host, req.Method).Inc()
	return t.base.RoundTrip(req)
}
