package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/moat-dev/moat/provider/internal/certs"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/protocol"
)

// FixtureFile is the name of a suite's external-data fixture, beside suite.yaml.
const FixtureFile = "external-data.yaml"

// Fixture is what the fixture provider answers while one suite runs:
//
//	provider: moat            # the Provider name the templates call (default "moat")
//	answers:
//	  "nginx:1.27": {value: {schema: moat.v2, digest: "sha256:…", status: accepted}}
//	  "bad:tag":    {error: "registry refused"}
//	systemError: ""           # when set, every request answers only this
//
// A key with no answer gets a per-key error saying so, so a suite never
// passes on an answer it did not write down.
type Fixture struct {
	Provider    string            `json:"provider"`
	Answers     map[string]Answer `json:"answers"`
	SystemError string            `json:"systemError"`
}

// Answer is one key's value or error.
type Answer struct {
	Value any    `json:"value,omitempty"`
	Error string `json:"error,omitempty"`
}

// ProviderName is the Provider the fixture answers as.
func (f *Fixture) ProviderName() string {
	if f == nil || f.Provider == "" {
		return "moat"
	}
	return f.Provider
}

// LoadFixture reads the fixture beside a suite; nil when there is none.
func LoadFixture(suiteDir string) (*Fixture, error) {
	raw, err := os.ReadFile(filepath.Join(suiteDir, FixtureFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f Fixture
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(suiteDir, FixtureFile), err)
	}
	return &f, nil
}

// fixtureProvider serves the current fixture as a Gatekeeper external-data
// provider over mutual TLS on loopback, with throw-away certificates.
type fixtureProvider struct {
	url     string
	certDir string
	current atomic.Pointer[Fixture]
	srv     *http.Server
}

func startFixtureProvider() (*fixtureProvider, error) {
	dir, err := os.MkdirTemp("", "moat-verify")
	if err != nil {
		return nil, err
	}
	set, err := certs.NewDevSet(nil, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := set.Write(dir); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rl := mtls.NewReloader(mtls.Files{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), ClientCA: filepath.Join(dir, "ca.crt")}, log, metrics.New())
	if err := rl.Load(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &fixtureProvider{url: "https://" + ln.Addr().String(), certDir: dir}
	p.srv = &http.Server{Handler: p, TLSConfig: rl.ServerConfig(false), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.ServeTLS(ln, "", "") }()
	return p, nil
}

func (p *fixtureProvider) close() {
	_ = p.srv.Shutdown(context.Background())
	_ = os.RemoveAll(p.certDir)
}

func (p *fixtureProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(protocol.SystemError(err.Error()))
		return
	}
	req, err := protocol.Decode(body, protocol.Limits{MaxKeys: 2000})
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(protocol.SystemError(err.Error()))
		return
	}
	f := p.current.Load()
	if f != nil && f.SystemError != "" {
		_, _ = w.Write(protocol.SystemError(f.SystemError))
		return
	}
	var enc protocol.Encoder
	enc.Reset(nil)
	for _, k := range req.Request.Keys {
		a, ok := Answer{}, false
		if f != nil {
			a, ok = f.Answers[k]
		}
		switch {
		case !ok:
			enc.Item(k, protocol.ErrorBody(fmt.Sprintf("%s has no answer for key %q", FixtureFile, k)))
		case a.Error != "":
			enc.Item(k, protocol.ErrorBody(a.Error))
		default:
			v, err := protocol.ValueBody(a.Value)
			if err != nil {
				v = protocol.ErrorBody(err.Error())
			}
			enc.Item(k, v)
		}
	}
	_, _ = w.Write(enc.Finish())
}
