// Package reference parses the image references Gatekeeper sends as keys and
// normalises them to one canonical spelling.
//
// The canonical form is the one containerd and the kubelet report in a pod's
// status: registry host, full repository path, then tag and/or digest. Docker
// Hub is spelled "docker.io" (not "index.docker.io") and official images get
// the "library/" path, so "nginx" becomes "docker.io/library/nginx:latest".
package reference

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
)

// MaxLength bounds a key before it is parsed. A distribution reference is at
// most 255 characters of repository plus host, tag and digest; anything much
// longer is not an image reference.
const MaxLength = 1024

const (
	maxRepository      = 255 // the distribution spec's limit on a repository path
	dockerHubCanonical = "docker.io"
	defaultTag         = "latest"
)

// Ref is a parsed, normalised image reference.
type Ref struct {
	// Repository is the canonical repository, e.g. "docker.io/library/nginx".
	Repository string
	// Registry is the registry host as go-containerregistry dials it
	// (Docker Hub is "index.docker.io" here).
	Registry string
	// Tag is the tag; "latest" when the key named neither tag nor digest.
	Tag string
	// Digest is set when the key pinned a digest ("sha256:…").
	Digest string

	repo name.Repository
}

// ErrInvalid wraps every parse failure so callers can tell bad input from
// registry trouble.
var ErrInvalid = errors.New("invalid image reference")

// Parse parses and normalises key. The error message names what is wrong in
// words a person can act on, and wraps ErrInvalid.
func Parse(key string) (Ref, error) {
	switch {
	case key == "":
		return Ref{}, fmt.Errorf("%w: empty string", ErrInvalid)
	case len(key) > MaxLength:
		return Ref{}, fmt.Errorf("%w: %d bytes long, the limit is %d", ErrInvalid, len(key), MaxLength)
	case !utf8.ValidString(key):
		return Ref{}, fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	}
	for _, r := range key {
		if r <= ' ' || r == 0x7f || r > 0x7e {
			return Ref{}, fmt.Errorf("%w: %q contains the character %q; references are printable ASCII without spaces", ErrInvalid, key, r)
		}
	}

	// go-containerregistry takes "https://ghcr.io/app" for registry "https:";
	// the kubelet would refuse it, and a policy must not read it differently.
	if strings.Contains(key, "://") {
		return Ref{}, fmt.Errorf("%w: %q has a URL scheme; write the reference without it", ErrInvalid, key)
	}
	if strings.Contains(key, "//") || strings.HasPrefix(key, "/") {
		return Ref{}, fmt.Errorf("%w: %q has an empty path component", ErrInvalid, key)
	}

	base, digest, pinned := strings.Cut(key, "@")
	if pinned && strings.Contains(digest, "@") {
		return Ref{}, fmt.Errorf("%w: %q has more than one '@'", ErrInvalid, key)
	}

	// name.NewTag accepts a repository without a tag and defaults it to
	// "latest"; we only want that default when no digest was given.
	tag, err := name.NewTag(base)
	if err != nil {
		return Ref{}, fmt.Errorf("%w: %q: %s", ErrInvalid, key, err)
	}
	if n := len(tag.RepositoryStr()); n > maxRepository {
		// Checked after "library/" is added: that is the name the registry sees.
		return Ref{}, fmt.Errorf("%w: %q: repository path %q is %d characters, the limit is %d", ErrInvalid, key, clip(tag.RepositoryStr()), n, maxRepository)
	}
	if strings.HasSuffix(tag.RegistryStr(), ":") {
		return Ref{}, fmt.Errorf("%w: %q: registry %q has an empty port", ErrInvalid, key, tag.RegistryStr())
	}
	r := Ref{
		Registry: tag.RegistryStr(),
		repo:     tag.Repository,
	}
	r.Repository = canonicalRegistry(r.Registry) + "/" + tag.RepositoryStr()
	if hasExplicitTag(base) {
		r.Tag = tag.TagStr()
	}

	if pinned {
		d, err := name.NewDigest(r.Repository + "@" + digest)
		if err != nil {
			return Ref{}, fmt.Errorf("%w: %q: %s", ErrInvalid, key, err)
		}
		r.Digest = d.DigestStr()
	} else if r.Tag == "" {
		r.Tag = defaultTag
	}
	return r, nil
}

// String is the canonical reference: repository[:tag][@digest].
func (r Ref) String() string {
	s := r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Pinned is the canonical reference with digest d, keeping the tag for
// readability: "docker.io/library/nginx:1.27@sha256:…".
func (r Ref) Pinned(d string) string {
	s := r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	return s + "@" + d
}

// IsPinned reports whether the key already carried a digest, in which case no
// registry call is needed.
func (r Ref) IsPinned() bool { return r.Digest != "" }

// NameRef is the go-containerregistry reference used to resolve the tag.
func (r Ref) NameRef() name.Reference {
	if r.Digest != "" {
		return r.repo.Digest(r.Digest)
	}
	return r.repo.Tag(r.Tag)
}

// hasExplicitTag reports whether s ends in ":tag" after its last "/", so a
// registry port ("localhost:5000/app") is not mistaken for a tag.
func hasExplicitTag(s string) bool {
	i := strings.LastIndexByte(s, ':')
	return i > strings.LastIndexByte(s, '/')
}

func canonicalRegistry(host string) string {
	if host == name.DefaultRegistry {
		return dockerHubCanonical
	}
	return host
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
