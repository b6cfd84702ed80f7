// Package client sends ProviderRequests to a Moat provider (or any
// Gatekeeper external-data provider) over mutual TLS, the way Gatekeeper's
// client does: TLS 1.3, HTTP/1.1 with keep-alive, a client certificate.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
)

// Files are the PEM files a client needs. CA verifies the server; Cert and
// Key are the client certificate (both empty: none is presented).
type Files struct {
	CA, Cert, Key string
}

// Response is a decoded ProviderResponse.
type Response struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Response   struct {
		Idempotent  bool   `json:"idempotent"`
		Items       []Item `json:"items"`
		SystemError string `json:"systemError"`
	} `json:"response"`
}

// Item is one answered key; Value is raw JSON: a moat.v2 value from
// /validate (see Answer), a string from /mutate.
type Item struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value,omitempty"`
	Error string          `json:"error,omitempty"`
}

// Answer decodes a /validate item's value strictly (answer.Decode).
func (it Item) Answer() (*answer.Value, error) {
	if it.Error != "" {
		return nil, fmt.Errorf("%s: %s", it.Key, it.Error)
	}
	return answer.Decode(it.Value)
}

// TLSConfig builds the client TLS configuration from f.
func TLSConfig(f Files) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS13}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate found", f.CA)
		}
		c.RootCAs = pool
	}
	if f.Cert != "" || f.Key != "" {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// New returns an HTTP client using conf, keeping up to conns idle
// connections per host.
func New(conf *tls.Config, conns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:     conf,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}

// Body is the encoded ProviderRequest for keys.
func Body(keys []string) []byte {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "externaldata.gatekeeper.sh/v1beta1",
		"kind":       "ProviderRequest",
		"request":    map[string]any{"keys": keys},
	}) // strings always encode
	return b
}

// Post sends body to url and returns the HTTP status and the raw response.
func Post(ctx context.Context, c *http.Client, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// Lookup sends keys to url and decodes the answer.
func Lookup(ctx context.Context, c *http.Client, url string, keys []string) (*Response, int, error) {
	code, raw, err := Post(ctx, c, url, Body(keys))
	if err != nil {
		return nil, code, err
	}
	var r Response
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, code, fmt.Errorf("HTTP %d, response is not a ProviderResponse: %w", code, err)
	}
	return &r, code, nil
}
