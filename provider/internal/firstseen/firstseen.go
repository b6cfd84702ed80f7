// Package firstseen records when Moat first scanned each image digest and
// when it first saw each finding on it, the clock that grace periods run
// on. With a shared tier every replica reads and extends one record per
// digest, so they agree and a restart remembers; without one, each
// process keeps its own, and forgetting can only make Moat stricter (see
// Book.Observe).
package firstseen

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/checks"
)

// Retention is how long a record outlives the last scan of its digest. A
// digest in use is scanned at least every report TTL, which keeps its
// record; a record that expires starts again, with no grace.
const Retention = 30 * 24 * time.Hour

// Record is what is known about one digest.
type Record struct {
	// FirstScanned is when the digest was first scanned.
	FirstScanned time.Time
	// Seen maps Key(finding) to when it was first seen.
	Seen map[string]time.Time
}

// Key names a finding on a digest: its advisory and its package.
func Key(f answer.Finding) string { return f.ID + "|" + f.Package }

// Book holds the records. Safe for concurrent use.
type Book struct {
	local  *lru.Cache[string, Record]
	shared checks.Store // nil without a shared tier
	now    func() time.Time
	mu     sync.Mutex // one Observe at a time: scans are seconds apart
}

// New returns a Book keeping up to size digests in memory, and all of
// them in shared when it is not nil.
func New(size int, shared checks.Store) *Book {
	c, _ := lru.New[string, Record](max(size, 1))
	return &Book{local: c, shared: shared, now: time.Now}
}

// Observe records a finished scan of digest that found fs and returns the
// digest's record. A finding seen before keeps its first time; the
// earliest of the local and the shared record wins for every entry, so a
// record one replica or Redis lost comes back from the other. When no
// record is found, the digest counts as first scanned now, and every
// finding in it was there at the first scan: none gets grace. Losing a
// record therefore never grants grace, it only takes it away.
func (b *Book) Observe(ctx context.Context, digest string, fs []answer.Finding) Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now().UTC().Truncate(time.Second)
	rec, _ := b.local.Get(digest)
	if b.shared != nil {
		if raw, _, ok := b.shared.Get(ctx, storeKey(digest)); ok {
			rec = merge(rec, decode(raw))
		}
	}
	next := Record{FirstScanned: rec.FirstScanned, Seen: make(map[string]time.Time, len(rec.Seen)+len(fs))}
	if next.FirstScanned.IsZero() {
		next.FirstScanned = now
	}
	for k, t := range rec.Seen {
		next.Seen[k] = t
	}
	for _, f := range fs {
		if _, ok := next.Seen[Key(f)]; !ok {
			next.Seen[Key(f)] = now
		}
	}
	b.local.Add(digest, next)
	if b.shared != nil {
		b.shared.Set(ctx, storeKey(digest), encode(next), Retention)
	}
	return next
}

func storeKey(digest string) string { return "firstseen:" + digest }

// merge keeps the earlier time of every entry of a and b.
func merge(a, b Record) Record {
	out := Record{FirstScanned: earliest(a.FirstScanned, b.FirstScanned), Seen: map[string]time.Time{}}
	for _, r := range []Record{a, b} {
		for k, t := range r.Seen {
			out.Seen[k] = earliest(out.Seen[k], t)
		}
	}
	return out
}

// earliest of two times, a zero time meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// stored is a Record as the shared tier holds it, in Unix seconds.
type stored struct {
	FirstScanned int64            `json:"s"`
	Seen         map[string]int64 `json:"f"`
}

func encode(r Record) []byte {
	s := stored{FirstScanned: r.FirstScanned.Unix(), Seen: make(map[string]int64, len(r.Seen))}
	for k, t := range r.Seen {
		s.Seen[k] = t.Unix()
	}
	b, _ := json.Marshal(s) // ints and strings always encode
	return b
}

// decode reads a stored record; one it cannot read is no record (the
// shared tier authenticates what it returns, so this is a version skew).
func decode(raw []byte) Record {
	var s stored
	if json.Unmarshal(raw, &s) != nil || s.FirstScanned <= 0 {
		return Record{}
	}
	r := Record{FirstScanned: time.Unix(s.FirstScanned, 0).UTC(), Seen: make(map[string]time.Time, len(s.Seen))}
	for k, t := range s.Seen {
		if t > 0 {
			r.Seen[k] = time.Unix(t, 0).UTC()
		}
	}
	return r
}
