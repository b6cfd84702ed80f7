package firstseen_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/firstseen"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/shared"
	"github.com/moat-dev/moat/provider/testenv"
)

const digest = "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"

var (
	old   = answer.Finding{ID: "CVE-OLD", Package: "openssl"}
	fresh = answer.Finding{ID: "CVE-NEW", Package: "zlib"}
)

// replica is a Book on r, as one replica (or one life of a restarted one)
// holds it, with a clock the test sets.
func replica(t *testing.T, r *testenv.Redis, clock *time.Time) *firstseen.Book {
	t.Helper()
	var store *shared.Store
	if r != nil {
		var err error
		store, err = shared.Open(shared.Options{URL: r.URL, PasswordFile: r.PasswordFile, MACKeyFile: r.MACKeyFile, Prefix: "moat:",
			Budget: 250 * time.Millisecond}, metrics.New().Shared, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = store.Close() })
	}
	b := firstseen.New(100, nil)
	if store != nil {
		b = firstseen.New(100, store)
	}
	b.SetClock(func() time.Time { return *clock })
	return b
}

func TestFirstSeenIsOneRecordForAllReplicasAndRestarts(t *testing.T) {
	r := testenv.StartRedis(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	clock := t0
	a := replica(t, r, &clock)
	first := a.Observe(ctx, digest, []answer.Finding{old})
	if !first.FirstScanned.Equal(t0) || !first.Seen[firstseen.Key(old)].Equal(t0) {
		t.Fatalf("first scan: %+v", first)
	}

	// A day later the other replica scans with a new database.
	clock = t0.Add(24 * time.Hour)
	b := replica(t, r, &clock)
	rec := b.Observe(ctx, digest, []answer.Finding{old, fresh})
	if !rec.FirstScanned.Equal(t0) || !rec.Seen[firstseen.Key(old)].Equal(t0) || !rec.Seen[firstseen.Key(fresh)].Equal(clock) {
		t.Fatalf("second replica: %+v; want the first scan at %s and the new finding at %s", rec, t0, clock)
	}

	// The first replica restarts (a new Book) and scans again: same record.
	clock = t0.Add(48 * time.Hour)
	restarted := replica(t, r, &clock)
	again := restarted.Observe(ctx, digest, []answer.Finding{old, fresh})
	if !again.FirstScanned.Equal(t0) || !again.Seen[firstseen.Key(fresh)].Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("after a restart: %+v", again)
	}
}

// Without a shared tier (or when Redis lost the record), a restarted
// replica knows nothing: the digest counts as first scanned now, so every
// finding was there at the first scan and none gets grace. Forgetting
// only takes grace away.
func TestForgettingNeverGrantsGrace(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	clock := t0
	a := replica(t, nil, &clock)
	a.Observe(ctx, digest, []answer.Finding{old})
	clock = t0.Add(24 * time.Hour)
	kept := a.Observe(ctx, digest, []answer.Finding{old, fresh})
	if !kept.Seen[firstseen.Key(fresh)].After(kept.FirstScanned) {
		t.Fatalf("one process: the new finding is not newer than the first scan: %+v", kept)
	}

	restarted := replica(t, nil, &clock)
	lost := restarted.Observe(ctx, digest, []answer.Finding{old, fresh})
	for k, seen := range lost.Seen {
		if seen.After(lost.FirstScanned) {
			t.Errorf("after a restart without a shared tier %s is newer than the first scan: it would get grace", k)
		}
	}

	// The same with Redis emptied under a replica that never saw the
	// digest: no record anywhere, no grace.
	r := testenv.StartRedis(t)
	b := replica(t, r, &clock)
	b.Observe(ctx, digest, []answer.Finding{old})
	if err := r.Client().FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Hour)
	c := replica(t, r, &clock)
	if rec := c.Observe(ctx, digest, []answer.Finding{old, fresh}); rec.Seen[firstseen.Key(fresh)].After(rec.FirstScanned) {
		t.Errorf("a record Redis lost came back with grace: %+v", rec)
	}
}

// A record another key's MAC does not cover is ignored: Redis access can
// delete a record (no grace) but not write one.
func TestAForgedRecordIsIgnored(t *testing.T) {
	r := testenv.StartRedis(t)
	ctx := context.Background()
	clock := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	if err := r.Client().Set(ctx, "moat:firstseen:"+digest, firstseen.Encode(firstseen.Record{FirstScanned: clock.Add(-time.Hour), Seen: map[string]time.Time{}}), 0).Err(); err != nil {
		t.Fatal(err)
	}
	rec := replica(t, r, &clock).Observe(ctx, digest, []answer.Finding{fresh})
	if !rec.FirstScanned.Equal(clock) || rec.Seen[firstseen.Key(fresh)].After(rec.FirstScanned) {
		t.Errorf("a forged record was used: %+v", rec)
	}
}

// A stored record that decodes is one Encode gives back unchanged; nothing
// stored makes decoding panic.
func FuzzDecode(f *testing.F) {
	f.Add(firstseen.Encode(firstseen.Record{FirstScanned: time.Unix(1_790_000_000, 0), Seen: map[string]time.Time{"CVE-1|openssl": time.Unix(1_790_000_100, 0)}}))
	f.Add([]byte(`{"s":-1,"f":{"a":0}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		rec := firstseen.Decode(raw)
		if rec.FirstScanned.IsZero() {
			return
		}
		again := firstseen.Decode(firstseen.Encode(rec))
		if !again.FirstScanned.Equal(rec.FirstScanned) || len(again.Seen) != len(rec.Seen) {
			t.Fatalf("%q: %+v, then %+v", raw, rec, again)
		}
		for k, v := range rec.Seen {
			if !again.Seen[k].Equal(v) {
				t.Fatalf("%q: %s %s, then %s", raw, k, v, again.Seen[k])
			}
		}
	})
}
