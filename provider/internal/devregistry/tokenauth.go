package devregistry

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// TokenAuth makes a registry demand bearer tokens as Docker Hub, ACR, ECR
// and Artifact Registry do: a 401 with a `WWW-Authenticate: Bearer`
// challenge naming its token endpoint, which issues access tokens for a
// user's password (HTTP basic) or, as ACR's does, for a refresh token; and
// ACR's /oauth2/exchange, which turns an Entra ID access token into such a
// refresh token.
type TokenAuth struct {
	// Users are the user names and passwords the token endpoint accepts.
	Users map[string]string
	// Exchange accepts an Entra ID access token at /oauth2/exchange and
	// names the user its refresh token stands for; nil: no exchange.
	Exchange func(entraToken string) (user string, ok bool)
	// RefreshLifetime is the life of the refresh tokens it issues.
	RefreshLifetime time.Duration

	mu        sync.Mutex
	access    map[string]string // access token → user
	refresh   map[string]string // refresh token → user
	byUser    map[string]int    // registry requests authenticated per user
	exchanges int
}

// SetTokenAuth requires bearer tokens from a on every request from now on.
func (r *Registry) SetTokenAuth(a *TokenAuth) {
	a.mu.Lock()
	a.access, a.refresh, a.byUser = map[string]string{}, map[string]string{}, map[string]int{}
	a.mu.Unlock()
	r.tokens.Store(a)
}

// Authenticated is how many registry requests user's tokens made.
func (a *TokenAuth) Authenticated(user string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byUser[user]
}

// Exchanges is how many Entra ID tokens were exchanged.
func (a *TokenAuth) Exchanges() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exchanges
}

// serve answers the token endpoints and checks the bearer token of every
// other request; it reports whether the request was answered.
func (a *TokenAuth) serve(w http.ResponseWriter, req *http.Request) bool {
	switch req.URL.Path {
	case "/oauth2/token":
		a.token(w, req)
		return true
	case "/oauth2/exchange":
		a.exchange(w, req)
		return true
	}
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	user, known := a.access[tok]
	if ok && known {
		a.byUser[user]++
	}
	a.mu.Unlock()
	if ok && known {
		return false
	}
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s://%s/oauth2/token",service=%q`, scheme, req.Host, req.Host))
	http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
	return true
}

func (a *TokenAuth) token(w http.ResponseWriter, req *http.Request) {
	var user string
	if u, p, ok := req.BasicAuth(); ok {
		if want, known := a.Users[u]; known && want == p {
			user = u
		}
	} else if req.Method == http.MethodPost && req.ParseForm() == nil && req.PostForm.Get("grant_type") == "refresh_token" {
		a.mu.Lock()
		user = a.refresh[req.PostForm.Get("refresh_token")]
		a.mu.Unlock()
	}
	if user == "" {
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	tok := newToken()
	a.mu.Lock()
	a.access[tok] = user
	a.mu.Unlock()
	writeJSON(w, map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

func (a *TokenAuth) exchange(w http.ResponseWriter, req *http.Request) {
	if a.Exchange == nil || req.Method != http.MethodPost || req.ParseForm() != nil || req.PostForm.Get("grant_type") != "access_token" {
		http.Error(w, "unsupported", http.StatusBadRequest)
		return
	}
	user, ok := a.Exchange(req.PostForm.Get("access_token"))
	if !ok || req.PostForm.Get("service") != req.Host {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	// A JWT's shape, with the exp claim a client reads to know when to
	// exchange again; the signature is not checked by anyone here.
	claims, _ := json.Marshal(map[string]any{"exp": time.Now().Add(a.RefreshLifetime).Unix(), "sub": user})
	tok := "e30." + base64.RawURLEncoding.EncodeToString(claims) + "." + newToken()
	a.mu.Lock()
	a.refresh[tok] = user
	a.exchanges++
	a.mu.Unlock()
	writeJSON(w, map[string]string{"refresh_token": tok})
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
