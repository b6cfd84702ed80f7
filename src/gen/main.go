// Command gen builds the shipped ConstraintTemplates in templates/ from
// their sources in src/templates/<name>/ and the shared code in src/library/.
//
//	go run ./src/gen           # write templates/*.yaml
//	go run ./src/gen -check    # fail if any is out of date (make test)
//
// A source directory holds template.yaml (kind, title, description,
// controls, parameters), policy.rego and policy.cel.yaml (CEL variables and
// validations). A template with `pod: true` gets the shared pod parameters
// (excludedContainers, excludedImages), the shared CEL variables from
// src/library/pods.cel.yaml, and src/library/pods.rego inlined as a lib, so both
// engines see the same containers, in the same order, with the same
// exclusions.
package main

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/semver"
)

type source struct {
	Kind  string `yaml:"kind"`
	Title string `yaml:"title"`
	// Version is metadata.gatekeeper.sh/version: a semantic version, its
	// minor raised when the template's behaviour changes.
	Version     string   `yaml:"version"`
	Description string   `yaml:"description"`
	Controls    []string `yaml:"controls"`
	Pod         bool     `yaml:"pod"`
	// NoExclusions leaves out excludedContainers/excludedImages for pod
	// rules that judge pod-level fields only.
	NoExclusions bool `yaml:"noExclusions"`
	// RegoOnly templates call external_data, which CEL cannot: Gatekeeper
	// would run only the CEL of a template that has both, so they have none.
	RegoOnly bool `yaml:"regoOnly"`
	// JudgedWhen replaces variables.judged as the CEL condition for a
	// verdict of a pod template, for a rule that judges more updates than
	// Pod Security Admission does; its Rego then guards its violations with
	// a rule "judged" of its own instead of pods.judged.
	JudgedWhen string `yaml:"judgedWhen"`
	// PodSecurity marks a template the Pod Security Standards sets use: it
	// gets the parameter version (src/library/pss.cel.yaml, pss.rego) and
	// refuses a malformed one.
	PodSecurity bool      `yaml:"podSecurity"`
	Libs        []string  `yaml:"libs"`
	Parameters  yaml.Node `yaml:"parameters"`
}

type celSource struct {
	Variables   []celVariable   `yaml:"variables"`
	Validations []celValidation `yaml:"validations"`
}

type celVariable struct {
	Name       string `yaml:"name"`
	Expression string `yaml:"expression"`
}

type celValidation struct {
	Expression        string `yaml:"expression"`
	MessageExpression string `yaml:"messageExpression,omitempty"`
	Message           string `yaml:"message,omitempty"`
}

// The shipped template, fields in the order a reader expects.
type template struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   metadata `yaml:"metadata"`
	Spec       spec     `yaml:"spec"`
}

type metadata struct {
	Name        string            `yaml:"name"`
	Annotations map[string]string `yaml:"annotations"`
}

type spec struct {
	CRD     crd      `yaml:"crd"`
	Targets []target `yaml:"targets"`
}

type crd struct {
	Spec struct {
		Names struct {
			Kind string `yaml:"kind"`
		} `yaml:"names"`
		Validation struct {
			OpenAPIV3Schema struct {
				Type       string    `yaml:"type"`
				Properties yaml.Node `yaml:"properties"`
			} `yaml:"openAPIV3Schema"`
		} `yaml:"validation"`
	} `yaml:"spec"`
}

type target struct {
	Target string   `yaml:"target"`
	Code   []code   `yaml:"code,omitempty"`
	Rego   string   `yaml:"rego"`
	Libs   []string `yaml:"libs,omitempty"`
}

type code struct {
	Engine string    `yaml:"engine"`
	Source celSource `yaml:"source"`
}

// versionParameter is the parameter of every podSecurity template. The
// pattern is the one src/library/pss.cel.yaml and pss.rego accept.
const versionParameter = `
version:
  type: string
  pattern: ^(latest|v1\.(0|[1-9][0-9]{0,4}))$
  description: The Pod Security Standards version whose rules the constraint follows, "latest" (the default) or "v1.N", as Pod Security Admission's enforce-version.
`

// versionRefused is the verdict on a malformed version, in both engines.
const versionRefused = `parameter version must be \"latest\" or \"v1.N\" (the Pod Security Standards version, as Pod Security Admission's enforce-version)`

const podParameters = `
excludedContainers:
  type: array
  description: Names of containers this constraint does not check.
  items: {type: string}
excludedImages:
  type: array
  description: Images this constraint does not check. An entry ending in "*" is a prefix; any other entry must equal the image as written in the pod.
  items: {type: string}
`

func main() {
	check := flag.Bool("check", false, "report templates that are out of date instead of writing them")
	amend := flag.Bool("amend", false, "accept changed templates under their locked versions (only for versions no release has shipped)")
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	if err := run(*root, *check, *amend); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(root string, check, amend bool) error {
	dirs, err := filepath.Glob(filepath.Join(root, "src", "templates", "*", "template.yaml"))
	if err != nil {
		return err
	}
	sort.Strings(dirs)
	var stale []string
	var sources []source
	files := map[string][]byte{}
	lockPath := filepath.Join(root, "src", "templates", "versions.lock")
	locked, err := readLock(lockPath)
	if err != nil {
		return err
	}
	lock := map[string]lockEntry{}
	for _, f := range dirs {
		dir := filepath.Dir(f)
		out, name, err := build(root, dir)
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		var src source
		if err := readYAML(f, &src); err != nil {
			return err
		}
		sources = append(sources, src)
		files[filepath.Join(root, "templates", name+".yaml")] = out
		now := lockEntry{Version: src.Version, Sum: contentSum(out)}
		if err := checkVersion(name, locked[name], now, amend); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		lock[name] = now
	}
	files[lockPath] = writeLock(lock)
	files[filepath.Join(root, "templates", "README.md")] = docs(sources)
	if err := mirrorIntoChart(root, files); err != nil {
		return err
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, path := range paths {
		out := files[path]
		if check {
			if cur, err := os.ReadFile(path); err != nil || !bytes.Equal(cur, out) {
				stale = append(stale, path)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, out, 0o644); err != nil {
			return err
		}
	}
	// templates/ is applied as a whole (kubectl apply -R -f templates/,
	// gator test -f templates/): it holds what is generated, nothing else.
	err = filepath.WalkDir(filepath.Join(root, "templates"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if _, ok := files[path]; !ok {
			return fmt.Errorf("%s: templates/ holds only the generated templates and their README; sources belong in src/templates/", path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		return fmt.Errorf("out of date (run 'make generate'): %s", strings.Join(stale, ", "))
	}
	return nil
}

func build(root, dir string) ([]byte, string, error) {
	var src source
	if err := readYAML(filepath.Join(dir, "template.yaml"), &src); err != nil {
		return nil, "", err
	}
	var cel celSource
	if !src.RegoOnly {
		if err := readYAML(filepath.Join(dir, "policy.cel.yaml"), &cel); err != nil {
			return nil, "", err
		}
	}
	rego, err := os.ReadFile(filepath.Join(dir, "policy.rego"))
	if err != nil {
		return nil, "", err
	}
	if src.PodSecurity {
		if !src.Pod {
			return nil, "", fmt.Errorf("template.yaml: podSecurity needs pod: true")
		}
		rego = append(rego, []byte("\nviolation[{\"msg\": \""+versionRefused+"\"}] {\n\tdata.lib.moat.pss.malformed\n}\n")...)
	}
	if src.Pod {
		guard := "pods.judged"
		if src.JudgedWhen != "" {
			guard = "judged"
		}
		if rego, err = guardViolations(rego, guard); err != nil {
			return nil, "", err
		}
	}
	name := strings.ToLower(src.Kind)
	if !plainVersion.MatchString(src.Version) {
		return nil, "", fmt.Errorf("template.yaml: version %q is not a semantic version (major.minor.patch)", src.Version)
	}
	if filepath.Base(dir) != name {
		return nil, "", fmt.Errorf("directory must be named %q after the kind", name)
	}
	if !strings.HasPrefix(string(rego), "package "+name+"\n") {
		return nil, "", fmt.Errorf("policy.rego must start with 'package %s'", name)
	}

	params := src.Parameters
	if params.Kind == 0 {
		params = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	libs := append([]string{"review"}, src.Libs...)
	var pre []celVariable
	if src.Pod {
		if !src.NoExclusions {
			if err := addParameters(&params, podParameters); err != nil {
				return nil, "", err
			}
		}
		var pods celSource
		if err := readYAML(filepath.Join(root, "src", "library", "pods.cel.yaml"), &pods); err != nil {
			return nil, "", err
		}
		pre = pods.Variables
		libs = append([]string{"review", "pods"}, src.Libs...)
	}
	if src.PodSecurity {
		var pss celSource
		if err := readYAML(filepath.Join(root, "src", "library", "pss.cel.yaml"), &pss); err != nil {
			return nil, "", err
		}
		pre = append(pre, pss.Variables...)
		libs = append([]string{"review", "pods", "pss"}, src.Libs...)
		if err := addParameters(&params, versionParameter); err != nil {
			return nil, "", err
		}
		cel.Validations = append([]celValidation{{Expression: "variables.pssMinor >= 0", Message: strings.ReplaceAll(versionRefused, `\"`, `"`)}}, cel.Validations...)
	}
	// As src/library/review.rego does: no verdict on DELETE; pod templates
	// give one only when src/library/pods.cel.yaml judges the review.
	cel.Variables = append(append([]celVariable{{Name: "isDelete", Expression: `has(request.operation) && request.operation == "DELETE"`}}, pre...), cel.Variables...)
	gate := "variables.isDelete"
	switch {
	case src.JudgedWhen != "":
		gate = "!(" + src.JudgedWhen + ")"
	case src.Pod:
		gate = "!variables.judged"
	}
	for i := range cel.Validations {
		cel.Validations[i].Expression = gate + " || (" + strings.TrimSpace(cel.Validations[i].Expression) + ")"
	}
	nullIsAbsent(&cel)
	pruneVariables(&cel)
	var t template
	t.APIVersion = "templates.gatekeeper.sh/v1"
	t.Kind = "ConstraintTemplate"
	t.Metadata.Name = name
	t.Metadata.Annotations = map[string]string{
		"metadata.gatekeeper.sh/title":   src.Title,
		"metadata.gatekeeper.sh/version": src.Version,
		"description":                    strings.TrimSpace(src.Description),
		"moat.dev/controls":              strings.Join(src.Controls, "; "),
	}
	t.Spec.CRD.Spec.Names.Kind = src.Kind
	t.Spec.CRD.Spec.Validation.OpenAPIV3Schema.Type = "object"
	t.Spec.CRD.Spec.Validation.OpenAPIV3Schema.Properties = params
	tg := target{
		Target: "admission.k8s.gatekeeper.sh",
		Code:   []code{{Engine: "K8sNativeValidation", Source: cel}},
		Rego:   string(rego),
	}
	if src.RegoOnly {
		tg.Code = nil
	}
	for _, l := range libs {
		b, err := os.ReadFile(filepath.Join(root, "src", "library", l+".rego"))
		if err != nil {
			return nil, "", err
		}
		tg.Libs = append(tg.Libs, string(b))
	}
	t.Spec.Targets = []target{tg}

	var node yaml.Node
	if err := node.Encode(&t); err != nil {
		return nil, "", err
	}
	expandAliases(&node)
	literalStrings(&node)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Generated by src/gen from src/templates/%s and src/library/. Do not edit: edit the sources and run 'make generate'.\n", name)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&node); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), name, nil
}

// addParameters appends the parameters of YAML mapping text to params.
func addParameters(params *yaml.Node, text string) error {
	var shared yaml.Node
	if err := yaml.Unmarshal([]byte(text), &shared); err != nil {
		return err
	}
	params.Content = append(params.Content, shared.Content[0].Content...)
	return nil
}

// lockEntry is one line of src/templates/versions.lock: a template's
// version and the digest of what was generated under it, so that a change
// of behaviour without a new version is refused, as gatekeeper-library's
// CI refuses it.
type lockEntry struct{ Version, Sum string }

func readLock(path string) (map[string]lockEntry, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string]lockEntry{}, nil
	}
	if err != nil {
		return nil, err
	}
	m := map[string]lockEntry{}
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || !plainVersion.MatchString(f[1]) {
			return nil, fmt.Errorf("%s:%d: want 'name version sha256:…'", path, i+1)
		}
		m[f[0]] = lockEntry{Version: f[1], Sum: f[2]}
	}
	return m, nil
}

func writeLock(m map[string]lockEntry) []byte {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteString("# Written by src/gen: each template's version and the digest of the template generated under it.\n")
	b.WriteString("# A template that changes must get a new version (minor: behaviour, patch: a fix).\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s %s\n", n, m[n].Version, m[n].Sum)
	}
	return b.Bytes()
}

// contentSum digests a generated template without its version line, so
// that a version bump alone is not a change.
func contentSum(out []byte) string {
	var kept [][]byte
	for _, line := range bytes.Split(out, []byte("\n")) {
		if !bytes.Contains(line, []byte("metadata.gatekeeper.sh/version:")) {
			kept = append(kept, line)
		}
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(bytes.Join(kept, []byte("\n"))))
}

// checkVersion refuses a template whose content changed under the same
// version, and a version that went down.
func checkVersion(name string, old, now lockEntry, amend bool) error {
	switch {
	case old.Version == "":
		return nil // a new template
	case old.Version == now.Version && old.Sum != now.Sum && !amend:
		return fmt.Errorf("%s changed but its version is still %s: raise version in template.yaml (minor for a change of behaviour, patch for a fix), or run 'go run ./src/gen -amend' if %s was never released", name, now.Version, now.Version)
	case old.Version != now.Version && semver.Compare("v"+old.Version, "v"+now.Version) >= 0:
		return fmt.Errorf("version %s is lower than the locked %s", now.Version, old.Version)
	}
	return nil
}

// plainVersion is major.minor.patch, as gatekeeper-library writes it.
var plainVersion = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

// hasField is a CEL presence test of a field path, as the sources write it.
var hasField = regexp.MustCompile(`\bhas\(([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\)`)

// nullIsAbsent makes every has(x.f) of the CEL code false when f is an
// explicit null, as the API server decodes it (object, oldObject and params
// are dynamic in CEL, so the comparison compiles). Raw manifests checked by
// gator or moat verify carry such nulls (Helm output often does), and CEL
// would otherwise select fields of null and fail the evaluation. The
// Rego twin is src/library/pods.rego's pod_spec, which drops null fields.
func nullIsAbsent(cel *celSource) {
	fix := func(e string) string {
		return hasField.ReplaceAllStringFunc(e, func(h string) string {
			path := hasField.FindStringSubmatch(h)[1]
			// request and namespaceObject are typed: their fields are never
			// null, and CEL refuses to compare a string with null.
			if strings.HasPrefix(path, "request.") || strings.HasPrefix(path, "namespaceObject.") {
				return h
			}
			return "(" + h + " && " + path + " != null)"
		})
	}
	for i := range cel.Variables {
		cel.Variables[i].Expression = fix(cel.Variables[i].Expression)
	}
	for i := range cel.Validations {
		cel.Validations[i].Expression = fix(cel.Validations[i].Expression)
		cel.Validations[i].MessageExpression = fix(cel.Validations[i].MessageExpression)
	}
}

// variableRef is a reference to a CEL variable in an expression.
var variableRef = regexp.MustCompile(`variables\.([A-Za-z_][A-Za-z0-9_]*)`)

// pruneVariables drops the variables no validation reads, directly or
// through another variable: the shared preamble declares more than most
// templates use, and Gatekeeper and the API server pay for every variable
// a policy declares on every review, read or not (docs/performance.md).
func pruneVariables(cel *celSource) {
	byName := map[string]string{}
	for _, v := range cel.Variables {
		byName[v.Name] = v.Expression
	}
	used := map[string]bool{}
	var mark func(expr string)
	mark = func(expr string) {
		for _, m := range variableRef.FindAllStringSubmatch(expr, -1) {
			if !used[m[1]] {
				used[m[1]] = true
				mark(byName[m[1]])
			}
		}
	}
	for _, v := range cel.Validations {
		mark(v.Expression)
		mark(v.MessageExpression)
	}
	kept := cel.Variables[:0]
	for _, v := range cel.Variables {
		if used[v.Name] {
			kept = append(kept, v)
		}
	}
	cel.Variables = kept
}

// guardViolations makes guard the first condition of every violation rule,
// as the CEL validations are wrapped: a pod template gives a verdict only
// on a review src/library/pods.rego judges.
func guardViolations(rego []byte, guard string) ([]byte, error) {
	lines := strings.Split(string(rego), "\n")
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		out = append(out, l)
		if strings.HasPrefix(l, "violation[") {
			if !strings.HasSuffix(l, "] {") {
				return nil, fmt.Errorf("policy.rego: a violation rule must open its body on its first line: %q", l)
			}
			out = append(out, "\t"+guard)
		}
	}
	return []byte(strings.Join(out, "\n")), nil
}

// mirrorIntoChart copies the templates and the constraint sets into the
// Helm chart's files/, since a chart cannot read files outside itself.
func mirrorIntoChart(root string, files map[string][]byte) error {
	chartFiles := filepath.Join(root, "charts", "moat", "files")
	for path, data := range files {
		if strings.HasSuffix(path, ".yaml") {
			files[filepath.Join(chartFiles, "templates", filepath.Base(path))] = data
		}
	}
	for _, set := range []string{"expansion", "mutation", "defender", "pss/baseline", "pss/restricted"} {
		matches, err := filepath.Glob(filepath.Join(root, "constraints", set, "*.yaml"))
		if err != nil {
			return err
		}
		for _, m := range matches {
			data, err := os.ReadFile(m)
			if err != nil {
				return err
			}
			files[filepath.Join(chartFiles, "constraints", set, filepath.Base(m))] = data
		}
	}
	return nil
}

// docs is templates/README.md: one entry per template, from its source.
func docs(sources []source) []byte {
	var b bytes.Buffer
	b.WriteString(`# Moat ConstraintTemplates

Generated by src/gen from src/templates/ and src/library/; do not edit. Every template carries both
engines: CEL (` + "`K8sNativeValidation`" + `, which Gatekeeper runs when both are present and can turn into a
ValidatingAdmissionPolicy) and Rego, with the same verdicts and messages (test/templates checks thousands of
generated objects). Pod templates judge ` + "`containers`, `initContainers` and `ephemeralContainers`" + ` (so a
` + "`kubectl debug`" + ` UPDATE of ` + "`pods/ephemeralcontainers`" + ` is judged too) and skip DELETE. An UPDATE is judged as
Pod Security Admission judges it: only when it adds or removes a container, changes an image, or adds or changes
an ephemeral container; ` + "`MoatContainerLimits`" + ` also judges a change of resources, and the image templates judge
only the images an UPDATE adds or changes. A workload's UPDATE is judged through its pod template, only
when the template changes; its CREATE through Gatekeeper's expansion (docs/policies.md, "Updates"). Explicit nulls read
as absent. Each template's
version (` + "`metadata.gatekeeper.sh/version`" + `) is raised when its behaviour changes (src/templates/versions.lock enforces it). Ready constraints are in
constraints/; suites with allowed and denied cases in gator-suites/.

| Kind | Title | Controls |
|---|---|---|
`)
	for _, s := range sources {
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s | %s |\n", s.Kind, strings.ToLower(s.Kind), s.Title, strings.Join(s.Controls, "<br>"))
	}
	for _, s := range sources {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", s.Kind, strings.TrimSpace(s.Description))
		fmt.Fprintf(&b, "Controls: %s.\n\n", strings.Join(s.Controls, "; "))
		params := paramDocs(s.Parameters)
		if s.Pod && !s.NoExclusions {
			params = append(params,
				"`excludedContainers` (array of strings): names of containers this constraint does not check.",
				"`excludedImages` (array of strings): images it does not check; an entry ending in `*` is a prefix, any other must equal the image as written.")
		}
		if s.PodSecurity {
			params = append(params, "`version` (string): the Pod Security Standards version whose rules the constraint follows, `latest` (the default) or `v1.N`, as Pod Security Admission's `enforce-version`; a malformed one is a violation.")
		}
		if len(params) == 0 {
			b.WriteString("Parameters: none.\n")
			continue
		}
		b.WriteString("Parameters:\n\n")
		for _, p := range params {
			fmt.Fprintf(&b, "- %s\n", p)
		}
	}
	return b.Bytes()
}

// paramDocs lists "name (type): description" for a parameters mapping.
func paramDocs(n yaml.Node) []string {
	var out []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		var p struct {
			Type        string `yaml:"type"`
			Description string `yaml:"description"`
			Items       struct {
				Type string `yaml:"type"`
			} `yaml:"items"`
		}
		_ = n.Content[i+1].Decode(&p)
		t := p.Type
		if t == "array" && p.Items.Type != "" {
			t = "array of " + p.Items.Type + "s"
		}
		line := fmt.Sprintf("`%s` (%s)", n.Content[i].Value, t)
		if p.Description != "" {
			line += ": " + p.Description
		}
		out = append(out, line)
	}
	return out
}

// expandAliases replaces YAML aliases (*x) by copies of what they name, so
// the shipped templates are plain YAML whatever the sources use.
func expandAliases(n *yaml.Node) {
	n.Anchor = ""
	for i, c := range n.Content {
		if c.Kind == yaml.AliasNode {
			cp := *c.Alias
			n.Content[i] = &cp
		}
		expandAliases(n.Content[i])
	}
}

// literalStrings prints multi-line strings as | blocks, as people write them.
func literalStrings(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && strings.Contains(n.Value, "\n") {
		n.Style = yaml.LiteralStyle
	}
	for _, c := range n.Content {
		literalStrings(c)
	}
}

func readYAML(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
