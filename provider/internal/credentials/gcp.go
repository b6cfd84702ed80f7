package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// gcpDetected: a Google credentials file (a service account key, or
// workload identity federation's configuration) is named. GKE workload
// identity injects nothing: it needs --gcp-identity on.
func gcpDetected() bool { return os.Getenv("GOOGLE_APPLICATION_CREDENTIALS") != "" }

// gcpScope is what an access token must allow to pull.
const gcpScope = "https://www.googleapis.com/auth/cloud-platform"

// gcp uses Google's application default credentials: the file named by
// GOOGLE_APPLICATION_CREDENTIALS, or the metadata server (GKE workload
// identity, a node's service account). Artifact Registry and GCR take the
// access token as the password of user oauth2accesstoken.
type gcp struct {
	http *http.Client
	once sync.Mutex
	ts   oauth2.TokenSource
}

func newGCP(opts Options) (source, error) { return &gcp{http: opts.Identity}, nil }

func (g *gcp) name() string { return "Google application default credentials" }

func (g *gcp) hint() string {
	return "bind the Kubernetes ServiceAccount to a Google service account with roles/artifactregistry.reader (GKE workload identity), or name a credentials file in GOOGLE_APPLICATION_CREDENTIALS (docs/registries.md#gke)"
}

// scope: one access token serves every Google registry.
func (g *gcp) scope(string) string { return "google" }

func (g *gcp) source(ctx context.Context) (oauth2.TokenSource, error) {
	g.once.Lock()
	defer g.once.Unlock()
	if g.ts != nil {
		return g.ts, nil
	}
	// The token source keeps this context for its HTTP calls: it must not
	// be the caller's, which ends.
	base := context.Background()
	if g.http != nil {
		base = context.WithValue(base, oauth2.HTTPClient, g.http)
	}
	creds, err := google.FindDefaultCredentials(base, gcpScope)
	if err != nil {
		return nil, err
	}
	g.ts = creds.TokenSource
	return g.ts, nil
}

func (g *gcp) fetch(ctx context.Context, _ string) (Token, error) {
	type result struct {
		tok *oauth2.Token
		err error
	}
	ch := make(chan result, 1)
	go func() { // TokenSource takes no context
		ts, err := g.source(ctx)
		if err != nil {
			ch <- result{err: err}
			return
		}
		t, err := ts.Token()
		ch <- result{t, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return Token{}, fmt.Errorf("asking Google for an access token: %w", errorLine(r.err))
		}
		if r.tok.AccessToken == "" || r.tok.Expiry.IsZero() {
			return Token{}, errors.New("asking Google for an access token: the answer holds no token or no expiry")
		}
		return Token{Auth: authn.AuthConfig{Username: "oauth2accesstoken", Password: r.tok.AccessToken}, Expires: r.tok.Expiry}, nil
	case <-ctx.Done():
		return Token{}, fmt.Errorf("asking Google for an access token: %w", context.Cause(ctx))
	}
}
