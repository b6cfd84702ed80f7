package shared_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/shared"
	"github.com/moat-dev/moat/provider/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// budget is generous: a loaded CI machine must not turn a call into a miss.
const budget = 250 * time.Millisecond

func open(t testing.TB, r *testenv.Redis, prefix string) (*shared.Store, *metrics.Metrics) {
	t.Helper()
	m := metrics.New()
	opts := shared.Options{URL: r.URL, PasswordFile: r.PasswordFile, MACKeyFile: r.MACKeyFile, Prefix: prefix,
		Budget: budget, Cooldown: 100 * time.Millisecond}
	if r.CertDir != "" {
		opts.CAFile = filepath.Join(r.CertDir, "ca.crt")
		opts.CertFile, opts.KeyFile = filepath.Join(r.CertDir, "client.crt"), filepath.Join(r.CertDir, "client.key")
	}
	s, err := shared.Open(opts, m.Shared, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, m
}

func TestValuesAreSharedUntilTheyExpire(t *testing.T) {
	r := testenv.StartRedis(t)
	a, _ := open(t, r, "moat:")
	b, _ := open(t, r, "moat:")
	ctx := context.Background()
	a.Set(ctx, "k", []byte(`{"status":"accepted"}`), 300*time.Millisecond)
	v, left, ok := b.Get(ctx, "k")
	if !ok || string(v) != `{"status":"accepted"}` || left <= 0 || left > 300*time.Millisecond {
		t.Fatalf("the other store reads %q, %s left, ok %v", v, left, ok)
	}
	if _, _, ok := b.Get(ctx, "other"); ok {
		t.Error("a key never set is found")
	}
	a.Set(ctx, "forever", []byte("v"), 0)
	if _, _, ok := b.Get(ctx, "forever"); ok {
		t.Error("a value without a lifetime is stored (Redis would keep it forever)")
	}
	if _, _, ok := open2(t, r, "other-install:").Get(ctx, "k"); ok {
		t.Error("another prefix reads this install's value")
	}
	time.Sleep(350 * time.Millisecond)
	if _, _, ok := b.Get(ctx, "k"); ok {
		t.Error("the value outlives its lifetime")
	}
}

func open2(t *testing.T, r *testenv.Redis, prefix string) *shared.Store {
	s, _ := open(t, r, prefix)
	return s
}

// Anyone who can write to Redis must not make an image accepted: a value
// rewritten, moved to another key, replayed after it expired, or written
// under another key is ignored and counted.
func TestTamperedValuesAreRefused(t *testing.T) {
	r := testenv.StartRedis(t)
	s, m := open(t, r, "moat:")
	ctx := context.Background()
	raw := r.Client()
	defer raw.Close()

	s.Set(ctx, "report", []byte(`{"status":"rejected"}`), time.Hour)
	rec, err := raw.Get(ctx, "moat:report").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	rewritten := bytes.Replace(rec, []byte("rejected"), []byte("accepted"), 1)
	must(t, raw.Set(ctx, "moat:report", rewritten, time.Hour).Err())
	if v, _, ok := s.Get(ctx, "report"); ok {
		t.Errorf("a rewritten value is read: %s", v)
	}

	s.Set(ctx, "accepted-image", []byte(`{"status":"accepted"}`), time.Hour)
	moved, _ := raw.Get(ctx, "moat:accepted-image").Bytes()
	must(t, raw.Set(ctx, "moat:vulnerable-image", moved, time.Hour).Err())
	if _, _, ok := s.Get(ctx, "vulnerable-image"); ok {
		t.Error("a value moved to another key is read")
	}

	s.Set(ctx, "short", []byte(`{"status":"accepted"}`), 50*time.Millisecond)
	old, _ := raw.Get(ctx, "moat:short").Bytes()
	time.Sleep(80 * time.Millisecond)
	must(t, raw.Set(ctx, "moat:short", old, time.Hour).Err())
	if _, _, ok := s.Get(ctx, "short"); ok {
		t.Error("a value replayed after its expiry is read")
	}

	must(t, raw.Set(ctx, "moat:plain", `{"status":"accepted"}`, time.Hour).Err())
	if _, _, ok := s.Get(ctx, "plain"); ok {
		t.Error("a value written without the MAC key is read")
	}

	otherKey := filepath.Join(t.TempDir(), "key")
	must(t, os.WriteFile(otherKey, []byte(strings.Repeat("x", 40)), 0o600))
	other, err := shared.Open(shared.Options{URL: r.URL, PasswordFile: r.PasswordFile, MACKeyFile: otherKey, Budget: budget, Prefix: "moat:"},
		metrics.New().Shared, slog.New(slog.NewTextHandler(io.Discard, nil)))
	must(t, err)
	defer other.Close()
	other.Set(ctx, "forged", []byte(`{"status":"accepted"}`), time.Hour)
	if _, _, ok := s.Get(ctx, "forged"); ok {
		t.Error("a value sealed under another key is read")
	}
	if n := testutil.ToFloat64(m.Shared.Rejected); n != 5 {
		t.Errorf("moat_shared_rejected_total = %v, want 5", n)
	}
}

func TestALeaseIsHeldOnceAndOutlivesNoHolder(t *testing.T) {
	r := testenv.StartRedis(t)
	a, _ := open(t, r, "moat:")
	b, _ := open(t, r, "moat:")
	ctx := context.Background()
	release, ok, err := a.Lease(ctx, "scan:sha256:1", time.Hour)
	if !ok || err != nil {
		t.Fatalf("first lease: %v %v", ok, err)
	}
	if _, ok, err := b.Lease(ctx, "scan:sha256:1", time.Hour); ok || err != nil {
		t.Fatalf("a second holder took a held lease: %v %v", ok, err)
	}
	release()
	release2, ok, err := b.Lease(ctx, "scan:sha256:1", time.Hour)
	if !ok || err != nil {
		t.Fatalf("after release: %v %v", ok, err)
	}
	release() // a holder whose lease was taken over releases nothing
	if _, ok, _ := a.Lease(ctx, "scan:sha256:1", time.Hour); ok {
		t.Error("an old holder's release freed the new holder's lease")
	}
	release2()

	// A holder that dies (never releases) lets go when the lease ends.
	if _, ok, _ := a.Lease(ctx, "scan:sha256:2", 100*time.Millisecond); !ok {
		t.Fatal("lease 2")
	}
	time.Sleep(150 * time.Millisecond)
	if _, ok, _ := b.Lease(ctx, "scan:sha256:2", time.Hour); !ok {
		t.Error("a lease outlives its holder")
	}
}

// Redis stopped (SIGSTOP), killed, restarted empty: every call returns a
// miss, the breaker opens after a few failures and skips Redis, and the
// tier works again once Redis is back.
func TestFaultsReadAsMissesAndTheBreakerRecovers(t *testing.T) {
	r := testenv.StartRedis(t)
	s, m := open(t, r, "moat:")
	ctx := context.Background()
	s.Set(ctx, "k", []byte("v"), time.Hour)

	r.Pause()
	for range 10 {
		if _, _, ok := s.Get(ctx, "k"); ok {
			t.Fatal("a stopped Redis answered")
		}
	}
	if testutil.ToFloat64(m.Shared.BreakerOpen) != 1 {
		t.Error("the breaker is not open while Redis is stopped")
	}
	if testutil.ToFloat64(m.Shared.Calls.WithLabelValues("get", "skipped")) == 0 {
		t.Error("no call was skipped while the breaker was open")
	}
	if _, ok, err := s.Lease(ctx, "x", time.Hour); ok || err == nil {
		t.Errorf("a lease while Redis is stopped: %v %v, want an error", ok, err)
	}
	r.Resume()
	eventually(t, func() bool { _, _, ok := s.Get(ctx, "k"); return ok })
	if testutil.ToFloat64(m.Shared.BreakerOpen) != 0 {
		t.Error("the breaker stays open after Redis returned")
	}

	r.Kill()
	if _, _, ok := s.Get(ctx, "k"); ok {
		t.Fatal("a killed Redis answered")
	}
	r.Start() // empty
	eventually(t, func() bool {
		s.Set(ctx, "k2", []byte("v2"), time.Hour)
		_, _, ok := s.Get(ctx, "k2")
		return ok
	})
	if _, _, ok := s.Get(ctx, "k"); ok {
		t.Error("a value of the data set before the restart is read")
	}
}

// Redis full (maxmemory, noeviction) refuses writes but answers: the
// breaker stays closed and reads go on.
func TestAFullRedisRefusesWritesButStillAnswers(t *testing.T) {
	r := testenv.StartRedis(t, "--maxmemory", "1mb", "--maxmemory-policy", "noeviction")
	s, m := open(t, r, "moat:")
	ctx := context.Background()
	s.Set(ctx, "first", []byte("v"), time.Hour)
	big := bytes.Repeat([]byte("x"), 64<<10)
	for i := range 64 {
		s.Set(ctx, "fill-"+string(rune('a'+i%26))+strings.Repeat("-", i), big, time.Hour)
	}
	if testutil.ToFloat64(m.Shared.Calls.WithLabelValues("set", "error")) == 0 {
		t.Fatal("no write was refused: Redis is not full")
	}
	if testutil.ToFloat64(m.Shared.BreakerOpen) != 0 {
		t.Error("the breaker opened on a Redis that answers")
	}
	if _, _, ok := s.Get(ctx, "first"); !ok {
		t.Error("reads stopped while Redis is full")
	}
}

func TestTLSWithAClientCertificate(t *testing.T) {
	r := testenv.StartRedisTLS(t)
	s, _ := open(t, r, "moat:")
	ctx := context.Background()
	// The first calls may miss while the pool's TLS handshakes run.
	eventually(t, func() bool {
		s.Set(ctx, "k", []byte("v"), time.Hour)
		v, _, ok := s.Get(ctx, "k")
		return ok && string(v) == "v"
	})
}

func TestOpenRefusesWhatCannotWork(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	short := filepath.Join(dir, "short")
	must(t, os.WriteFile(key, []byte(strings.Repeat("k", 32)), 0o600))
	must(t, os.WriteFile(short, []byte("short"), 0o600))
	for _, c := range []struct {
		opts shared.Options
		want string
	}{
		{shared.Options{URL: "redis://:secret@127.0.0.1:6379", MACKeyFile: key, Budget: budget}, "--redis-password-file"},
		{shared.Options{URL: "http://127.0.0.1:6379", MACKeyFile: key, Budget: budget}, "--redis-url"},
		{shared.Options{URL: "redis://127.0.0.1:6379", MACKeyFile: short, Budget: budget}, "32 or more"},
		{shared.Options{URL: "redis://127.0.0.1:6379", MACKeyFile: filepath.Join(dir, "none"), Budget: budget}, "--redis-mac-key-file"},
		{shared.Options{URL: "redis://127.0.0.1:6379", MACKeyFile: key}, "--redis-budget"},
		{shared.Options{URL: "redis://127.0.0.1:6379", MACKeyFile: key, Budget: budget, CAFile: key}, "rediss://"},
	} {
		_, err := shared.Open(c.opts, metrics.New().Shared, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.opts, err, c.want)
		}
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("not within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
