// Package cache is a bounded LRU whose entries carry their own lifetime.
//
// golang-lru's expirable cache has one TTL for the whole cache; Moat keeps a
// resolved digest for minutes and a failure for seconds, so each entry
// carries its own expiry and an optional stale window on top of a plain
// golang-lru Cache.
package cache

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Freshness is how usable a cached entry is.
type Freshness int

const (
	// Miss: no entry, or one past its stale window.
	Miss Freshness = iota
	// Fresh: within its lifetime.
	Fresh
	// Stale: past its lifetime but inside its stale window; serve it and refresh.
	Stale
)

type entry[V any] struct {
	value      V
	expires    int64 // unix nanoseconds
	staleUntil int64
}

// Cache maps keys to values with per-entry lifetimes. It is safe for
// concurrent use.
type Cache[K comparable, V any] struct {
	lru *lru.Cache[K, entry[V]]
	now func() time.Time
}

// New returns a cache holding at most size entries. onEvict, if not nil, is
// called for each entry pushed out to make room.
func New[K comparable, V any](size int, onEvict func()) (*Cache[K, V], error) {
	var cb func(K, entry[V])
	if onEvict != nil {
		cb = func(K, entry[V]) { onEvict() }
	}
	l, err := lru.NewWithEvict[K, entry[V]](size, cb)
	if err != nil {
		return nil, err
	}
	return &Cache[K, V]{lru: l, now: time.Now}, nil
}

// Get returns the value for k and how fresh it is.
func (c *Cache[K, V]) Get(k K) (V, Freshness) { return c.GetAt(k, c.Now()) }

// Now is the cache's clock: a batch of GetAt calls reads it once.
func (c *Cache[K, V]) Now() time.Time { return c.now() }

// GetAt is Get at the time now, read from Now.
func (c *Cache[K, V]) GetAt(k K, at time.Time) (V, Freshness) {
	e, ok := c.lru.Get(k)
	if !ok {
		var zero V
		return zero, Miss
	}
	now := at.UnixNano()
	switch {
	case now < e.expires:
		return e.value, Fresh
	case now < e.staleUntil:
		return e.value, Stale
	}
	var zero V
	return zero, Miss
}

// Add stores v for ttl, then lets it be served stale for staleFor more.
// A ttl <= 0 stores v without expiry (for answers that cannot change, such
// as a digest-pinned reference).
func (c *Cache[K, V]) Add(k K, v V, ttl, staleFor time.Duration) {
	e := entry[V]{value: v, expires: 1<<63 - 1, staleUntil: 1<<63 - 1}
	if ttl > 0 {
		now := c.now()
		e.expires = now.Add(ttl).UnixNano()
		e.staleUntil = now.Add(ttl + staleFor).UnixNano()
	}
	c.lru.Add(k, e)
}

// SetClock replaces the clock (tests).
func (c *Cache[K, V]) SetClock(now func() time.Time) { c.now = now }

// Len is the number of entries, expired ones included until they are evicted.
func (c *Cache[K, V]) Len() int { return c.lru.Len() }
