// Package scanremote runs a Scanner as its own service (`moat scanner`) and
// calls it from the provider, so scans never compete with admission answers
// for CPU. The wire is one HTTPS call per scan, under mutual TLS:
//
//	POST /v1/scan {"image": "registry/repo@sha256:…"}
//	200 {"result": {...}}  or  4xx/5xx {"error": "...", "kind": "..."}
//	GET /v1/database
//	200 {"database": "..."}
//
// Every response carries the database the scanner uses now in the
// Moat-Scanner-Database header.
package scanremote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/scan"
)

// DatabaseHeader names the scanner's current database.
const DatabaseHeader = "Moat-Scanner-Database"

const maxBody = 4 << 20 // a result of thousands of findings fits

type request struct {
	Image string `json:"image"`
	// Scope is the credentials of a namespaced lookup: the service pulls
	// with that namespace's Secrets, as the provider would.
	Scope *credentials.Scope `json:"scope,omitempty"`
}

type response struct {
	Result *scan.Result `json:"result,omitempty"`
	Error  string       `json:"error,omitempty"`
	Kind   string       `json:"kind,omitempty"`
}

// Handler serves scans with s, at most `workers` at once; a request waits
// for a free worker as long as its client does.
func Handler(s scan.Scanner, workers int, log *slog.Logger) http.Handler {
	slots := make(chan struct{}, max(workers, 1))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/database", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"database": s.Database()})
	})
	mux.HandleFunc("POST /v1/scan", func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.Image == "" {
			reply(w, http.StatusBadRequest, response{Error: `want a JSON body {"image": "registry/repo@sha256:…"}`, Kind: "unsupported"})
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-r.Context().Done():
			return
		}
		if req.Scope != nil {
			if err := req.Scope.Check(); err != nil {
				reply(w, http.StatusBadRequest, response{Error: "scope: " + err.Error(), Kind: "unsupported"})
				return
			}
		}
		res, err := s.Scan(credentials.WithScope(r.Context(), req.Scope), req.Image)
		if err != nil {
			log.Warn("scan failed", "image", req.Image, "kind", scan.KindOf(err), "error", err.Error())
			reply(w, http.StatusUnprocessableEntity, response{Error: err.Error(), Kind: scan.KindOf(err)})
			return
		}
		log.Info("scan done", "image", req.Image, "findings", len(res.Findings))
		reply(w, http.StatusOK, response{Result: &res})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, response{Error: fmt.Sprintf("no endpoint %s %s: use POST /v1/scan", r.Method, r.URL.Path), Kind: "unsupported"})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(DatabaseHeader, s.Database())
		mux.ServeHTTP(w, r)
	})
}

func reply(w http.ResponseWriter, code int, r response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

// Client is a Scanner that calls a scanner service.
type Client struct {
	base string
	url  string
	http *http.Client
	db   atomic.Pointer[string]
}

// NewClient calls the scanner service at base ("https://host:port") with c,
// whose TLS configuration carries the provider's client certificate.
func NewClient(base string, c *http.Client) *Client {
	return &Client{base: base, url: base + "/v1/scan", http: c}
}

// Database is the scanner's database as its last answer named it.
func (c *Client) Database() string {
	if p := c.db.Load(); p != nil {
		return *p
	}
	return ""
}

// Refresh asks the service which database it scans with: the providers'
// reports are keyed by it (a report is shared only under a known database).
// Scans tell it too.
func (c *Client) Refresh(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/database", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if db := resp.Header.Get(DatabaseHeader); db != "" {
		c.db.Store(&db)
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return err
}

// Watch refreshes every `every` until ctx ends.
func (c *Client) Watch(ctx context.Context, every time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		_ = c.Refresh(ctx)
	}
}

// Scan asks the service to scan image and waits for the result.
func (c *Client) Scan(ctx context.Context, image string) (scan.Result, error) {
	body, _ := json.Marshal(request{Image: image, Scope: credentials.ScopeOf(ctx)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return scan.Result{}, scan.Errorf("scanner", "scanner service %s: %v", c.url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return scan.Result{}, ctx.Err()
		}
		return scan.Result{}, scan.Errorf("unavailable", "%s: the scanner service at %s is unreachable: %v", image, c.url, rootCause(err))
	}
	defer resp.Body.Close()
	if db := resp.Header.Get(DatabaseHeader); db != "" {
		c.db.Store(&db)
	}
	var r response
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&r); err != nil {
		return scan.Result{}, scan.Errorf("unavailable", "%s: the scanner service answered HTTP %d with no readable result after %s: %v",
			image, resp.StatusCode, time.Since(start).Round(time.Millisecond), err)
	}
	if resp.StatusCode != http.StatusOK || r.Result == nil {
		kind := r.Kind
		if kind == "" {
			kind = "scanner"
		}
		msg := r.Error
		if msg == "" {
			msg = fmt.Sprintf("%s: the scanner service answered HTTP %d", image, resp.StatusCode)
		}
		return scan.Result{}, &scan.Error{Kind: kind, Err: errors.New(msg)}
	}
	return *r.Result, nil
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
