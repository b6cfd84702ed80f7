package credentials

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Scope is the credentials a namespaced lookup asks for: the pull Secrets
// of one namespace, those the pod names first, then its ServiceAccount's.
// A scope never reaches another namespace's Secrets.
type Scope struct {
	Namespace      string   `json:"namespace"`
	ServiceAccount string   `json:"serviceAccount"`
	Secrets        []string `json:"secrets,omitempty"`
}

// Check refuses names Kubernetes would refuse.
func (s *Scope) Check() error {
	if errs := validation.IsDNS1123Label(s.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", s.Namespace, errs[0])
	}
	for _, n := range append([]string{s.ServiceAccount}, s.Secrets...) {
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			return fmt.Errorf("name %q: %s", n, errs[0])
		}
	}
	return nil
}

// String is the scope as keys and caches name it: "ns/sa/secret,secret".
func (s *Scope) String() string {
	return s.Namespace + "/" + s.ServiceAccount + "/" + strings.Join(s.Secrets, ",")
}

type scopeKey struct{}

// WithScope is ctx carrying s: the fetches made with it use s's Secrets
// before the cluster-wide credentials.
func WithScope(ctx context.Context, s *Scope) context.Context {
	if s == nil {
		return ctx
	}
	return context.WithValue(ctx, scopeKey{}, s)
}

// ScopeOf is the scope ctx carries, or nil.
func ScopeOf(ctx context.Context) *Scope {
	s, _ := ctx.Value(scopeKey{}).(*Scope)
	return s
}
