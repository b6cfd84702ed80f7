// Package verify runs gator Suites, the same files and semantics as
// `gator verify`, with external data: templates that call external_data
// (which gator cannot load) are evaluated by the constraint framework's
// rego driver against a provider, either a fixture provider answering from
// each suite's external-data.yaml or a running Moat.
package verify

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/frameworks/constraint/pkg/apis/externaldata/unversioned"
	constraintclient "github.com/open-policy-agent/frameworks/constraint/pkg/client"
	"github.com/open-policy-agent/frameworks/constraint/pkg/client/drivers/rego"
	"github.com/open-policy-agent/frameworks/constraint/pkg/externaldata"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	gatorverify "github.com/open-policy-agent/gatekeeper/v3/pkg/gator/verify"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// Options configure a run.
type Options struct {
	// ProviderURL, when set, is a running provider's base URL
	// ("https://host:8443"); CA, Cert and Key are then its CA and the client
	// certificate to present. Otherwise a fixture provider answers.
	ProviderURL, CA, Cert, Key string
	// CEL runs templates as Gatekeeper does (CEL where present); false runs Rego.
	CEL bool
	// Run filters tests and cases as gator's --run does.
	Run     string
	Verbose bool
}

// Run verifies the suites under each path (a directory, or one ending in
// "/..." for all below it) and prints gator's report to out. It returns
// whether any test failed.
func Run(ctx context.Context, paths []string, opts Options, out io.Writer) (failed bool, err error) {
	filter, err := gatorverify.NewFilter(opts.Run)
	if err != nil {
		return false, fmt.Errorf("--run: %w", err)
	}
	var fixture *fixtureProvider
	baseURL, caFile, certFile, keyFile := opts.ProviderURL, opts.CA, opts.Cert, opts.Key
	if baseURL == "" {
		if fixture, err = startFixtureProvider(); err != nil {
			return false, fmt.Errorf("starting the fixture provider: %w", err)
		}
		defer fixture.close()
		baseURL = fixture.url
		caFile = filepath.Join(fixture.certDir, "ca.crt")
		certFile = filepath.Join(fixture.certDir, "client.crt")
		keyFile = filepath.Join(fixture.certDir, "client.key")
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return false, fmt.Errorf("provider CA: %w", err)
	}
	cw, err := certwatcher.New(certFile, keyFile)
	if err != nil {
		return false, fmt.Errorf("client certificate: %w", err)
	}
	providers := externaldata.NewCache()
	upsert := func(name string) error {
		return providers.Upsert(&unversioned.Provider{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: unversioned.ProviderSpec{
				URL:      strings.TrimSuffix(baseURL, "/") + "/validate",
				Timeout:  3,
				CABundle: base64.StdEncoding.EncodeToString(caPEM),
			},
		})
	}
	if err := upsert("moat"); err != nil {
		return false, err
	}
	withExternalData := func() ([]constraintclient.Opt, []rego.Arg, error) {
		return nil, []rego.Arg{
			rego.AddExternalDataProviderCache(providers),
			rego.EnableExternalDataClientAuth(),
			rego.AddExternalDataClientCertWatcher(cw),
		}, nil
	}
	runner, err := gatorverify.NewRunner(os.DirFS("/"), func(o ...gator.Opt) (gator.Client, error) {
		o = append(o, withExternalData)
		if opts.CEL {
			o = append(o, gator.WithK8sCEL())
		}
		return gator.NewOPAClient(false, o...)
	})
	if err != nil {
		return false, err
	}

	var results []gatorverify.SuiteResult
	for _, p := range paths {
		suites, err := readSuites(p)
		if err != nil {
			return false, err
		}
		for _, s := range suites {
			if fixture != nil {
				f, err := LoadFixture(filepath.Dir("/" + strings.TrimPrefix(s.AbsolutePath, "/")))
				if err != nil {
					return false, err
				}
				fixture.current.Store(f)
				if err := upsert(f.ProviderName()); err != nil {
					return false, err
				}
			}
			r := runner.Run(ctx, filter, s)
			failed = failed || suiteFailed(r)
			results = append(results, r)
		}
	}
	var w strings.Builder
	if err := (gatorverify.PrinterGo{}).Print(&w, results, opts.Verbose); err != nil {
		return false, err
	}
	_, err = io.WriteString(out, w.String())
	return failed, err
}

// readSuites finds the suites at path as `gator verify` does.
func readSuites(path string) ([]*gatorverify.Suite, error) {
	original := path
	recursive := strings.HasSuffix(path, "/...")
	if recursive {
		path = strings.TrimSuffix(path, "...")
		original = strings.TrimSuffix(original, "...")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	suites, err := gatorverify.ReadSuites(os.DirFS("/"), strings.Trim(abs, "/"), original, recursive)
	if err != nil {
		return nil, fmt.Errorf("reading suites at %s: %w", original, err)
	}
	return suites, nil
}

func suiteFailed(r gatorverify.SuiteResult) bool {
	if r.Error != nil {
		return true
	}
	for _, t := range r.TestResults {
		if t.Error != nil {
			return true
		}
		for _, c := range t.CaseResults {
			if c.Error != nil {
				return true
			}
		}
	}
	return false
}
