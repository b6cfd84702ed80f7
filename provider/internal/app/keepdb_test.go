package app_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// An offline database file that is replaced (an offline mirror's sync) is
// loaded again; a replacement that is not a database leaves the last good
// one in use.
func TestADatabaseFileThatChangesIsLoadedAgain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vulnerability.db")
	if err := samples.WriteDB(path); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := vulndb.New(vulndb.Options{Dir: filepath.Join(dir, "work")}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		app.KeepDB(ctx, db, app.EngineConfig{DBPath: path, DBUpdateInterval: 20 * time.Millisecond}, log)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	first := waitFor(t, db, func(id string) bool { return id != "" })

	next := filepath.Join(dir, "next.db")
	if err := samples.WriteDBOf(next, samples.WithLater()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	second := waitFor(t, db, func(id string) bool { return id != first })

	if err := os.WriteFile(path, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if db.Current() != second {
		t.Errorf("a broken file replaced the database: %q", db.Current())
	}
}

func waitFor(t *testing.T, db *vulndb.DB, ok func(string) bool) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if id := db.Current(); ok(id) {
			return id
		}
	}
	t.Fatalf("database %q", db.Current())
	return ""
}
