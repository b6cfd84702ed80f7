package lookup

import (
	"fmt"
	"strings"

	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/reference"
)

// NamespacedPrefix starts a namespaced key: the image is looked up with the
// credentials of the pod's namespace (docs/protocol.md#namespaced-keys):
//
//	moat.ns.v1:<namespace>/<serviceAccount>/<secret>,<secret>:<image>
//
// Any other key is an image reference, looked up with the cluster-wide
// credentials.
const NamespacedPrefix = "moat.ns.v1:"

// keyFamily starts every namespaced key form, of any version.
const keyFamily = "moat.ns."

// ParseKey reads a key: its image and, for a namespaced key, its scope.
func ParseKey(k string) (reference.Ref, *credentials.Scope, error) {
	if !strings.HasPrefix(k, keyFamily) {
		ref, err := reference.Parse(k)
		return ref, nil, err
	}
	rest, ok := strings.CutPrefix(k, NamespacedPrefix)
	if !ok {
		return reference.Ref{}, nil, fmt.Errorf("%q: unknown key form (this provider reads %s…); upgrade Moat or the template", k, NamespacedPrefix)
	}
	scope, image, ok := strings.Cut(rest, ":")
	parts := strings.Split(scope, "/")
	if !ok || len(parts) != 3 {
		return reference.Ref{}, nil, fmt.Errorf("%q: want %s<namespace>/<serviceAccount>/<secret>,…:<image>", k, NamespacedPrefix)
	}
	s := &credentials.Scope{Namespace: parts[0], ServiceAccount: parts[1]}
	if parts[2] != "" {
		s.Secrets = strings.Split(parts[2], ",")
	}
	if err := s.Check(); err != nil {
		return reference.Ref{}, nil, fmt.Errorf("%q: %v", k, err)
	}
	ref, err := reference.Parse(image)
	if err != nil {
		return reference.Ref{}, nil, err
	}
	return ref, s, nil
}

// flightKey names one resolution: the canonical reference, within its
// scope. Two scopes never share a resolution, a cached digest or a shared
// one.
func flightKey(ref reference.Ref, s *credentials.Scope) string {
	if s == nil {
		return ref.String()
	}
	return NamespacedPrefix + s.String() + ":" + ref.String()
}
