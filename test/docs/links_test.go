// Package docs_test checks the documentation: every relative link of every
// Markdown file in the repository leads to a file that exists, and every
// #fragment to a heading of that file.
package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moat-dev/moat/test/pack"
)

var (
	link    = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	heading = regexp.MustCompile(`^#{1,6}\s+(.*)$`)
)

// markdown returns the Markdown files of the repository, without build
// outputs and fetched modules.
func markdown(t *testing.T) []string {
	var files []string
	err := filepath.WalkDir(pack.Root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".run" || d.Name() == "bin" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var inlineCode = regexp.MustCompile("`[^`]*`")

// prose drops fenced code blocks, where brackets are not links.
func prose(text string) []string {
	var out []string
	fenced := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			out = append(out, l)
		}
	}
	return out
}

// anchors are the fragments GitHub gives a file's headings.
func anchors(text string) map[string]bool {
	m := map[string]bool{}
	seen := map[string]int{}
	for _, l := range prose(text) {
		h := heading.FindStringSubmatch(l)
		if h == nil {
			continue
		}
		slug := slugify(h[1])
		if n := seen[slug]; n > 0 {
			m[slug+"-"+string(rune('0'+n))] = true
		} else {
			m[slug] = true
		}
		seen[slug]++
	}
	return m
}

func slugify(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestRelativeLinksLeadSomewhere(t *testing.T) {
	files := markdown(t)
	if len(files) < 10 {
		t.Fatalf("only %d Markdown files found under %s", len(files), pack.Root)
	}
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(pack.Root, f)
		for _, l := range prose(string(raw)) {
			for _, m := range link.FindAllStringSubmatch(inlineCode.ReplaceAllString(l, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path, frag, _ := strings.Cut(target, "#")
				dest := f
				if path != "" {
					dest = filepath.Join(filepath.Dir(f), path)
				}
				st, err := os.Stat(dest)
				if err != nil {
					t.Errorf("%s: link %s: %s does not exist", rel, target, path)
					continue
				}
				checked++
				if frag == "" || st.IsDir() || !strings.HasSuffix(dest, ".md") {
					continue
				}
				body, _ := os.ReadFile(dest)
				if !anchors(string(body))[frag] {
					t.Errorf("%s: link %s: no heading #%s in %s", rel, target, frag, path)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link checked")
	}
}

// The checker itself finds what is broken.
func TestTheCheckerSeesHeadingsAsGitHubDoes(t *testing.T) {
	a := anchors("# Caching, deadlines and Gatekeeper's own cache\n## `POST /validate`: the value\n## Errors\n## Errors\n")
	for _, want := range []string{"caching-deadlines-and-gatekeepers-own-cache", "post-validate-the-value", "errors", "errors-1"} {
		if !a[want] {
			t.Errorf("no anchor %s in %v", want, a)
		}
	}
}
