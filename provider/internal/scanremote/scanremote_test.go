package scanremote_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/scanremote"
)

// scopeOf records the credentials scope each scan arrived with.
type scopeOf struct{ got []*credentials.Scope }

func (s *scopeOf) Scan(ctx context.Context, _ string) (scan.Result, error) {
	s.got = append(s.got, credentials.ScopeOf(ctx))
	return scan.Result{}, nil
}

func (s *scopeOf) Database() string { return "db" }

// A namespaced lookup's scan is made by the service with the same scope,
// so it pulls with the same namespace's Secrets; a plain one with none.
func TestTheScopeTravelsToTheScannerService(t *testing.T) {
	rec := &scopeOf{}
	srv := httptest.NewServer(scanremote.Handler(rec, 1, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	c := scanremote.NewClient(srv.URL, srv.Client())
	want := &credentials.Scope{Namespace: "team-a", ServiceAccount: "builder", Secrets: []string{"regcred"}}
	if _, err := c.Scan(credentials.WithScope(context.Background(), want), "r.example/app@sha256:"+zeros); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Scan(context.Background(), "r.example/app@sha256:"+zeros); err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != 2 || rec.got[0] == nil || rec.got[0].Namespace != "team-a" || rec.got[0].ServiceAccount != "builder" ||
		!slices.Equal(rec.got[0].Secrets, want.Secrets) || rec.got[1] != nil {
		t.Fatalf("the service scanned with scopes %+v", rec.got)
	}
	// A scope Kubernetes could not name is refused, not scanned.
	if _, err := c.Scan(credentials.WithScope(context.Background(), &credentials.Scope{Namespace: "../x", ServiceAccount: "default"}), "r.example/app@sha256:"+zeros); err == nil {
		t.Error("a malformed scope was scanned")
	}
	if len(rec.got) != 2 {
		t.Error("the malformed scope reached the scanner")
	}
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"
