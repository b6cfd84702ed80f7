// Package vulndb keeps Grype's vulnerability database: it loads one from a
// file, an archive or a download, checks it, and swaps a new one in while
// scans run on the old one, which is closed when its last scan ends.
package vulndb

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchore/clio"
	v6 "github.com/anchore/grype/grype/db/v6"
	v6dist "github.com/anchore/grype/grype/db/v6/distribution"
	v6inst "github.com/anchore/grype/grype/db/v6/installation"
	"github.com/anchore/grype/grype/vulnerability"
)

// Options configure a DB.
type Options struct {
	// Dir holds the databases; each load gets a directory of its own in it.
	Dir string
	// URL is the listing of Grype's databases (or a mirror's) to download
	// from and check for updates; empty means offline.
	URL string
	// MaxAge is the oldest a database may be (by its build time) for scans
	// to use it; 0 means no limit.
	MaxAge time.Duration
}

// Snapshot is one loaded database.
type Snapshot struct {
	Provider vulnerability.Provider
	// ID changes with every database: schema, build time and checksum,
	// "v6.1.3@2026-11-22T06:12:00Z/sha256:…", the digest of the local file
	// or of the downloaded archive.
	ID     string
	Schema string
	Built  time.Time
	// From is where it was loaded from (a path or URL).
	From string

	reader v6.Reader
	desc   *v6.Description
	dir    string
	refs   int
	gone   bool
}

// DB is the current database. It is safe for concurrent use.
type DB struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	cur     *Snapshot
	curID   atomic.Pointer[string] // cur's ID, for Current
	seq     int
	lastErr error
	loading sync.Mutex // one load at a time
}

// New returns a DB with no database loaded: scans fail until Load succeeds.
func New(opts Options, log *slog.Logger) (*DB, error) {
	if opts.Dir == "" {
		return nil, errors.New("vulndb: a directory for the database is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("vulndb: %w", err)
	}
	return &DB{opts: opts, log: log, now: time.Now, lastErr: errors.New("no vulnerability database loaded yet")}, nil
}

// Acquire returns the current database for one scan, and the function that
// releases it. It fails when there is none or it is older than MaxAge.
func (d *DB) Acquire() (*Snapshot, func(), error) {
	d.mu.Lock()
	s := d.cur
	if s == nil {
		err := d.lastErr
		d.mu.Unlock()
		return nil, nil, fmt.Errorf("no vulnerability database: %w", err)
	}
	if age := d.now().Sub(s.Built); d.opts.MaxAge > 0 && age > d.opts.MaxAge {
		d.mu.Unlock()
		return nil, nil, fmt.Errorf("the vulnerability database was built %s ago, more than the maximum age %s; it is not updated (last error: %v)",
			age.Round(time.Minute), d.opts.MaxAge, d.lastError())
	}
	s.refs++
	d.mu.Unlock()
	return s, func() { d.release(s) }, nil
}

func (d *DB) lastError() error {
	if d.lastErr == nil {
		return errors.New("none")
	}
	return d.lastErr
}

// Current identifies the database scans use now ("" when none).
// It is read on every cached lookup, so it takes no lock.
func (d *DB) Current() string {
	if id := d.curID.Load(); id != nil {
		return *id
	}
	return ""
}

func (d *DB) release(s *Snapshot) {
	d.mu.Lock()
	s.refs--
	closeIt := s.gone && s.refs == 0
	d.mu.Unlock()
	if closeIt {
		d.discard(s)
	}
}

// Load loads a database from a local file (*.db) or archive (as Grype
// publishes them), checks it, and makes it current. On error the current
// database stays. Update loads from a URL.
func (d *DB) Load(from string) error { return d.loadAs(from, "") }

// loadAs loads from, naming the database by digest ("" for the file's own).
func (d *DB) loadAs(from, digest string) error {
	d.loading.Lock()
	defer d.loading.Unlock()
	s, err := d.load(from, digest)
	d.mu.Lock()
	if err != nil {
		d.lastErr = err
		d.mu.Unlock()
		return err
	}
	old := d.cur
	d.cur, d.lastErr = s, nil
	d.curID.Store(&s.ID)
	closeOld := old != nil && old.refs == 0
	if old != nil {
		old.gone = true
	}
	d.mu.Unlock()
	d.log.Info("vulnerability database loaded", "id", s.ID, "from", s.From)
	if closeOld {
		d.discard(old)
	}
	return nil
}

func (d *DB) load(from, digest string) (*Snapshot, error) {
	d.mu.Lock()
	d.seq++
	dir := filepath.Join(d.opts.Dir, "db-"+strconv.FormatInt(d.now().UnixNano(), 36)+"-"+strconv.Itoa(d.seq))
	d.mu.Unlock()
	cfg := v6inst.Config{DBRootDir: dir, ValidateChecksum: true}
	client, err := d.client()
	if err != nil {
		return nil, err
	}
	cur, err := v6inst.NewCurator(cfg, client)
	if err != nil {
		return nil, fmt.Errorf("vulnerability database: %w", err)
	}
	fail := func(err error) (*Snapshot, error) {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("vulnerability database from %s: %w", from, err)
	}
	if err := cur.Import(from); err != nil {
		return fail(err)
	}
	st := cur.Status()
	if st.Error != nil {
		return fail(st.Error)
	}
	desc, err := v6.ReadDescription(cfg.DBFilePath())
	if err != nil {
		return fail(err)
	}
	r, err := cur.Reader()
	if err != nil {
		return fail(err)
	}
	built := desc.Built.Time.UTC()
	// A database is named by the digest of what it was loaded from: the
	// local file, or the archive the listing names. Not by Grype's import
	// digest, nor by the imported file's: both differ between processes for
	// one database, and replicas that disagree on the ID share no reports.
	if digest == "" {
		if digest, err = fileDigest(from); err != nil {
			return fail(err)
		}
	}
	return &Snapshot{
		Provider: v6.NewVulnerabilityProvider(r),
		ID:       desc.SchemaVersion.String() + "@" + built.Format(time.RFC3339) + "/" + digest,
		Schema:   desc.SchemaVersion.String(),
		Built:    built,
		From:     from,
		reader:   r,
		desc:     desc,
		dir:      dir,
	}, nil
}

// Published is when the database says advisory id was published: the
// earliest date of its records; ok is false when none has a date.
func (s *Snapshot) Published(id string) (t time.Time, ok bool) {
	if s.reader == nil {
		return time.Time{}, false
	}
	hs, err := s.reader.GetVulnerabilities(&v6.VulnerabilitySpecifier{Name: id}, &v6.GetVulnerabilityOptions{})
	if err != nil {
		return time.Time{}, false
	}
	for _, h := range hs {
		if p := h.PublishedDate; p != nil && !p.IsZero() && (!ok || p.Before(t)) {
			t, ok = p.UTC(), true
		}
	}
	return t, ok
}

// fileDigest is "sha256:<hex>" of the file at path.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func (d *DB) client() (v6dist.Client, error) {
	cfg := v6dist.DefaultConfig()
	cfg.ID = clio.Identification{Name: "moat"}
	cfg.RequireUpdateCheck = true
	if d.opts.URL != "" {
		cfg.LatestURL = d.opts.URL
	}
	return v6dist.NewClient(cfg)
}

// Update checks URL for a database newer than the current one, and loads
// it. It reports whether it loaded one.
func (d *DB) Update() (bool, error) {
	if d.opts.URL == "" {
		return false, errors.New("no database URL configured")
	}
	client, err := d.client()
	if err != nil {
		return false, err
	}
	d.mu.Lock()
	var desc *v6.Description
	if d.cur != nil {
		desc = d.cur.desc
	}
	d.mu.Unlock()
	archive, err := client.IsUpdateAvailable(desc)
	if err != nil {
		d.setErr(err)
		return false, fmt.Errorf("checking %s for a database update: %w", d.opts.URL, err)
	}
	if archive == nil {
		return false, nil
	}
	u, err := client.ResolveArchiveURL(*archive)
	if err != nil {
		d.setErr(err)
		return false, err
	}
	if archive.Checksum == "" { // Grype verifies archives against it: a listing always names one
		return false, fmt.Errorf("%s names no checksum for %s", d.opts.URL, archive.Path)
	}
	return true, d.loadAs(u, archive.Checksum)
}

func (d *DB) setErr(err error) {
	d.mu.Lock()
	d.lastErr = err
	d.mu.Unlock()
}

func (d *DB) discard(s *Snapshot) {
	if err := s.Provider.Close(); err != nil {
		d.log.Warn("closing an old vulnerability database", "id", s.ID, "error", err.Error())
	}
	if err := os.RemoveAll(s.dir); err != nil {
		d.log.Warn("removing an old vulnerability database", "dir", s.dir, "error", err.Error())
	}
}

// Close closes the current database once its scans end.
func (d *DB) Close() {
	d.mu.Lock()
	s := d.cur
	d.cur = nil
	d.curID.Store(nil)
	closeIt := s != nil && s.refs == 0
	if s != nil {
		s.gone = true
	}
	d.mu.Unlock()
	if closeIt {
		d.discard(s)
	}
}
