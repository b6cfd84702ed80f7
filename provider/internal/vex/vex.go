// Package vex takes out of a scan the findings that OpenVEX statements say
// do not apply to the image: not_affected (with its justification) or
// fixed. Statements come from documents in a directory the operator mounts
// and, when enabled, from the image's own cosign attestations of predicate
// type https://openvex.dev/ns, verified under the provider's signature
// trust. Documents are read by OpenVEX's own library.
package vex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	openvex "github.com/openvex/go-vex/pkg/vex"
	"github.com/package-url/packageurl-go"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
)

// Predicate is the in-toto predicate type of an OpenVEX attestation
// (`cosign attest --type openvex`).
const Predicate = "https://openvex.dev/ns"

// Options configure a Source.
type Options struct {
	// Dir holds OpenVEX documents (JSON); files whose names start with "."
	// are skipped, as a mounted ConfigMap's bookkeeping is.
	Dir string
	// Attestations, when set, also reads the image's verified OpenVEX
	// attestations; nil reads none.
	Attestations *sigcheck.Verifier
}

// Source is the VEX statements Moat trusts. Safe for concurrent use.
type Source struct {
	dir    string
	verify *sigcheck.Verifier
	cur    atomic.Pointer[statements]
}

// statements are the documents of the directory as last read.
type statements struct {
	docs    []document
	version string
}

type document struct {
	doc    *openvex.VEX
	source string
}

// Load reads the documents of opts.Dir. A file that is not an OpenVEX
// document is an error naming it: a statement the operator meant to apply
// is never dropped silently.
func Load(opts Options) (*Source, error) {
	s := &Source{dir: opts.Dir, verify: opts.Attestations}
	st, err := s.read()
	if err != nil {
		return nil, err
	}
	s.cur.Store(st)
	return s, nil
}

// read reads the directory's documents.
func (s *Source) read() (*statements, error) {
	st := &statements{}
	h := sha256.New()
	if s.verify != nil {
		h.Write([]byte("attestations\n"))
	}
	if s.dir != "" {
		entries, err := os.ReadDir(s.dir)
		if err != nil {
			return nil, fmt.Errorf("--vex-dir: %w", err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			path := filepath.Join(s.dir, e.Name())
			if fi, err := os.Stat(path); err != nil || fi.IsDir() { // follows a ConfigMap's links
				continue
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("--vex-dir: %w", err)
			}
			doc, err := parse(raw)
			if err != nil {
				return nil, fmt.Errorf("--vex-dir: %s: %w", path, err)
			}
			st.docs = append(st.docs, document{doc: doc, source: "file " + e.Name()})
			fmt.Fprintf(h, "%s %x\n", e.Name(), sha256.Sum256(raw))
		}
	}
	st.version = hex.EncodeToString(h.Sum(nil)[:8])
	return st, nil
}

// Watch reads the directory again every interval until ctx ends, and uses
// what it finds when it changed (a ConfigMap update reaches the pod's
// files within about a minute). A directory that no longer reads, or a
// document that is not OpenVEX, is logged and the statements in use stay.
func (s *Source) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	if s.dir == "" {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		st, err := s.read()
		if err != nil {
			log.Error("VEX documents not reloaded; the previous statements stay in use", "error", err.Error())
			continue
		}
		if st.version != s.Version() {
			s.cur.Store(st)
			log.Info("VEX documents reloaded; reports are judged again", "files", len(st.docs), "version", st.version)
		}
	}
}

// Version changes whenever the statements Load or Watch read do: a report
// judged with other statements is judged again.
func (s *Source) Version() string { return s.cur.Load().version }

// Files is how many documents are in use.
func (s *Source) Files() int { return len(s.cur.Load().docs) }

func parse(raw []byte) (*openvex.VEX, error) {
	doc, err := openvex.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not an OpenVEX document: %w", err)
	}
	if !strings.HasPrefix(doc.Context, Predicate) {
		return nil, fmt.Errorf("not an OpenVEX document: @context is %q, want %s", doc.Context, openvex.ContextLocator())
	}
	return doc, nil
}

// Apply splits the findings of image ("registry/repo@sha256:…") into those
// that count and those a statement takes out. A finding is taken out when
// the newest statement about its advisory, this image and its package says
// not_affected or fixed. When the image's attestations cannot be read, the
// error says so and only the mounted documents apply: findings then count
// (the strict direction).
func (s *Source) Apply(ctx context.Context, image string, fs []answer.Finding) (kept, out []answer.Finding, err error) {
	docs := s.cur.Load().docs
	if s.verify != nil {
		attested, aerr := s.attested(ctx, image)
		if aerr != nil {
			err = aerr
		}
		docs = append(docs[:len(docs):len(docs)], attested...)
	}
	if len(docs) == 0 {
		return fs, nil, err
	}
	products := identifiers(image)
	for _, f := range fs {
		if st, src := newest(docs, f, products); st != nil && (st.Status == openvex.StatusNotAffected || st.Status == openvex.StatusFixed) {
			f.VEX = &answer.VEX{Status: string(st.Status), Justification: string(st.Justification), Impact: st.ImpactStatement, Source: src}
			out = append(out, f)
			continue
		}
		kept = append(kept, f)
	}
	return kept, out, err
}

// attested are the image's OpenVEX attestations that verify.
func (s *Source) attested(ctx context.Context, image string) ([]document, error) {
	sts, err := s.verify.Attestations(ctx, image)
	if errors.Is(err, sigcheck.ErrNoAttestations) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("VEX attestations not used: %w", err)
	}
	var docs []document
	for _, st := range sts {
		if st.PredicateType != Predicate {
			continue
		}
		doc, err := parse(st.Predicate)
		if err != nil {
			return docs, fmt.Errorf("%s: the OpenVEX attestation signed by %s: %w", image, st.Signer, err)
		}
		docs = append(docs, document{doc: doc, source: "attestation signed by " + st.Signer})
	}
	return docs, nil
}

// newest is the newest statement of docs about f in one of products, and
// its document's source. A finding with no package URL is matched as a
// package no subcomponent names, so a statement limited to some
// subcomponents never takes it out.
func newest(docs []document, f answer.Finding, products []string) (*openvex.Statement, string) {
	sub := f.PURL
	if sub == "" {
		sub = "moat:unnamed-package"
	}
	var best *openvex.Statement
	var bestAt time.Time
	var src string
	for _, d := range docs {
		var docAt time.Time
		if d.doc.Timestamp != nil {
			docAt = *d.doc.Timestamp
		}
		for _, p := range products {
			for _, st := range d.doc.Matches(f.ID, p, []string{sub}) {
				at := docAt
				if st.Timestamp != nil && !st.Timestamp.IsZero() {
					at = *st.Timestamp
				}
				if best == nil || !at.Before(bestAt) {
					best, bestAt, src = &st, at, d.source
				}
			}
		}
	}
	return best, src
}

// identifiers name the image as VEX documents name products: its package
// URL (pkg:oci/name@sha256:…?repository_url=registry/repo), the digest
// reference and the digest, and the digest's hex (a sha-256 hash entry).
func identifiers(image string) []string {
	repo, digest, ok := strings.Cut(image, "@")
	if !ok {
		return []string{image}
	}
	name := repo[strings.LastIndex(repo, "/")+1:]
	purl := packageurl.NewPackageURL("oci", "", name, digest, packageurl.QualifiersFromMap(map[string]string{"repository_url": repo}), "").ToString()
	ids := []string{purl, image, digest}
	if hexPart, ok := strings.CutPrefix(digest, "sha256:"); ok {
		ids = append(ids, hexPart)
	}
	sort.Strings(ids)
	return ids
}
