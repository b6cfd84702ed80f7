package registry

import (
	"fmt"
	"net/http"
)

// transport counts every registry request by host and purpose, holds one
// of the host's slots until the response headers arrive, and refuses plain
// HTTP to hosts not listed as insecure: a digest or a layer fetched over
// plain HTTP could be forged by anyone on the path.
//
// The slot is not held while a body streams: a body a library forgets to
// close must never use up a host's slots. Scans, which stream large
// bodies, are bounded by their workers instead.
type transport struct {
	client  *Client
	purpose string
}

// InsecureError is a request that would have gone over plain HTTP to a host
// not listed as insecure.
type InsecureError struct{ Host string }

func (e *InsecureError) Error() string {
	return fmt.Sprintf("registry %s would be reached over plain HTTP; Moat refuses that unless the host is listed in --insecure-registries", e.Host)
}

// BusyError is a request that found no free slot for its host before its
// context ended.
type BusyError struct {
	Host  string
	Slots int
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("registry %s: no free connection slot before the deadline (%d requests already in flight; --registry-concurrency)", e.Host, e.Slots)
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := t.client
	host := req.URL.Host
	if req.URL.Scheme == "http" && !c.insecure[host] {
		return nil, &InsecureError{Host: host}
	}
	slot := c.slot(host)
	select {
	case slot <- struct{}{}:
	case <-req.Context().Done():
		return nil, &BusyError{Host: host, Slots: cap(slot)}
	}
	c.metrics.RegistryRequests.WithLabelValues(host, req.Method, t.purpose).Inc()
	resp, err := c.base.RoundTrip(req)
	<-slot
	return resp, err
}
