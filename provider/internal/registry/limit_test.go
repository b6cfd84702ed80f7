package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/metrics"
)

func TestPerHostLimitBoundsConcurrency(t *testing.T) {
	reg := devregistry.New()
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	const tags = 6
	for i := range tags {
		if _, err := devregistry.Push(context.Background(), fmt.Sprintf("%s/app:t%d", host, i)); err != nil {
			t.Fatal(err)
		}
	}
	reg.SetDelay(100 * time.Millisecond) // long enough that the six overlap
	c, err := New(Options{PerHostConcurrency: 2, InsecureRegistries: []string{host}}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	head := func(ctx context.Context, tag string) error {
		ref, err := name.ParseReference(host+"/app:"+tag, name.Insecure)
		if err != nil {
			return err
		}
		_, err = remote.Head(ref, c.Options(ctx, Resolve)...)
		return err
	}
	errc := make(chan error, tags)
	for i := range tags {
		go func() { errc <- head(context.Background(), fmt.Sprintf("t%d", i)) }()
	}
	for range tags {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if peak := reg.PeakInFlight(); peak != 2 {
		t.Errorf("at most %d requests were in flight at once, want exactly the limit of 2", peak)
	}
	// Slots that never free: the deadline names the limit.
	slot := c.slot(host)
	slot <- struct{}{}
	slot <- struct{}{}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var busy *BusyError
	if err := head(ctx, "t1"); !errors.As(err, &busy) || !strings.Contains(err.Error(), "--registry-concurrency") {
		t.Errorf("full slots: %v", err)
	}
}

func TestNoClientWithoutALimit(t *testing.T) {
	if _, err := New(Options{}, metrics.New()); err == nil {
		t.Fatal("a client with no per-host limit")
	}
}
