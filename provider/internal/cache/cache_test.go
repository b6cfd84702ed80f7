package cache

import (
	"testing"
	"time"
)

func TestLifetimes(t *testing.T) {
	now := time.Unix(1000, 0)
	evicted := 0
	c, err := New[string, int](2, func() { evicted++ })
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return now }

	c.Add("digest", 1, time.Minute, 30*time.Second)
	c.Add("pinned", 2, 0, 0)
	check := func(k string, want int, wantF Freshness) {
		t.Helper()
		v, f := c.Get(k)
		if f != wantF || (f != Miss && v != want) {
			t.Errorf("Get(%q) at +%s = %d, %v; want %d, %v", k, now.Sub(time.Unix(1000, 0)), v, f, want, wantF)
		}
	}
	check("digest", 1, Fresh)
	now = now.Add(59 * time.Second)
	check("digest", 1, Fresh)
	now = now.Add(2 * time.Second)
	check("digest", 1, Stale)
	now = now.Add(30 * time.Second)
	check("digest", 0, Miss)
	now = now.Add(1000 * time.Hour)
	check("pinned", 2, Fresh)
	check("absent", 0, Miss)

	c.Add("third", 3, time.Minute, 0) // pushes out the least recently used
	if evicted != 1 || c.Len() != 2 {
		t.Errorf("evicted %d, len %d; want 1, 2", evicted, c.Len())
	}
	c.Add("third", 4, time.Minute, 0) // an update is no eviction
	if evicted != 1 {
		t.Errorf("update counted as eviction")
	}
}

func TestNewRefusesZeroSize(t *testing.T) {
	if _, err := New[string, int](0, nil); err == nil {
		t.Error("size 0 accepted")
	}
}
