// Package shared is the state the replicas of one install share in Redis
// (or any server that speaks its protocol): values authenticated with a key
// only the replicas hold, leases so that a piece of work is done once, and
// a per-call budget and a circuit breaker so that Redis never delays an
// answer beyond the budget nor fails one. Every failure reads as a miss:
// the caller then works from its own cache and from fresh work.
package shared

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moat-dev/moat/provider/internal/metrics"
)

// Options configure a Store.
type Options struct {
	// URL is redis://[user@]host:port[/db] or rediss:// for TLS.
	URL string
	// PasswordFile holds the password (its surrounding space is trimmed);
	// a password in URL is refused, so that it never shows in a process list.
	PasswordFile string
	// CAFile verifies a rediss:// server; CertFile and KeyFile are the client
	// certificate it may ask for. Empty CAFile: the system roots.
	CAFile, CertFile, KeyFile string
	// Prefix starts every key, so installs can share one server.
	Prefix string
	// Budget bounds each call; past it the call is a miss.
	Budget time.Duration
	// MACKeyFile holds the key values are authenticated with (at least 32
	// bytes); every replica of an install must hold the same one.
	MACKeyFile string
	// Cooldown is how long the breaker stays open before it probes again.
	Cooldown time.Duration
}

// Store is the shared tier. Safe for concurrent use.
type Store struct {
	rdb     *redis.Client
	prefix  string
	mac     []byte
	budget  time.Duration
	breaker *breaker
	m       *metrics.SharedMetrics
	log     *slog.Logger
	release *redis.Script
}

// Open checks the options and connects lazily: Redis need not be up for
// Moat to start (it answers from its own tier until Redis is).
func Open(opts Options, m *metrics.SharedMetrics, log *slog.Logger) (*Store, error) {
	if opts.Budget <= 0 {
		return nil, fmt.Errorf("--redis-budget must be positive, got %s", opts.Budget)
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = 2 * time.Second
	}
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %v (want redis://host:port or rediss://host:port)", err)
	}
	if ro.Password != "" {
		return nil, fmt.Errorf("--redis-url carries a password: put it in a file and name the file with --redis-password-file")
	}
	if opts.PasswordFile != "" {
		b, err := os.ReadFile(opts.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("--redis-password-file: %w", err)
		}
		ro.Password = strings.TrimSpace(string(b))
	}
	if ro.TLSConfig != nil {
		if ro.TLSConfig, err = tlsConfig(ro.TLSConfig, opts); err != nil {
			return nil, err
		}
	} else if opts.CAFile != "" || opts.CertFile != "" {
		return nil, fmt.Errorf("--redis-ca and --redis-cert need a rediss:// URL")
	}
	key, err := os.ReadFile(opts.MACKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--redis-mac-key-file: %w (every replica needs the same secret key, of 32 bytes or more)", err)
	}
	key = bytes.TrimSpace(key)
	if len(key) < 32 {
		return nil, fmt.Errorf("--redis-mac-key-file: the key has %d bytes; want 32 or more (e.g. head -c 32 /dev/urandom | base64)", len(key))
	}
	// One attempt per call, each inside the budget: a slow or stopped
	// server costs the budget, never more. Connections are kept warm, so a
	// call rarely pays a dial (a TLS handshake may take longer than the
	// budget: it then happens in the background).
	ro.MaxRetries = -1
	ro.ReadTimeout, ro.WriteTimeout, ro.PoolTimeout = opts.Budget, opts.Budget, opts.Budget
	ro.DialTimeout = max(opts.Budget, 2*time.Second)
	ro.MinIdleConns = 2
	ro.ContextTimeoutEnabled = true
	ro.DisableIdentity = true // no CLIENT SETINFO: managed servers may refuse it
	return &Store{
		rdb: redis.NewClient(ro), prefix: opts.Prefix, mac: key, budget: opts.Budget,
		breaker: newBreaker(opts.Cooldown, m, log), m: m, log: log,
		release: redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`),
	}, nil
}

func tlsConfig(base *tls.Config, opts Options) (*tls.Config, error) {
	c := base.Clone()
	c.MinVersion = tls.VersionTLS12
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--redis-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--redis-ca %s: no PEM certificate in it", opts.CAFile)
		}
		c.RootCAs = pool
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, fmt.Errorf("--redis-cert and --redis-key go together")
	}
	if opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--redis-cert: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// A stored record: version byte, expiry (Unix milliseconds), MAC, value.
// The MAC covers the full key and the expiry too, so a value cannot be
// moved to another key nor replayed past its life.
const (
	recordVersion = 1
	headerLen     = 1 + 8 + sha256.Size
)

func (s *Store) seal(key string, value []byte, expires time.Time) []byte {
	rec := make([]byte, headerLen, headerLen+len(value))
	rec[0] = recordVersion
	binary.BigEndian.PutUint64(rec[1:9], uint64(expires.UnixMilli()))
	copy(rec[9:headerLen], s.sum(key, rec[1:9], value))
	return append(rec, value...)
}

func (s *Store) sum(key string, expiry, value []byte) []byte {
	h := hmac.New(sha256.New, s.mac)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(key)))
	h.Write(n[:])
	h.Write([]byte(key))
	h.Write(expiry)
	h.Write(value)
	return h.Sum(nil)
}

// open returns the value of an authentic, unexpired record.
func (s *Store) open(key string, rec []byte, now time.Time) ([]byte, time.Duration, error) {
	if len(rec) < headerLen || rec[0] != recordVersion {
		return nil, 0, errors.New("not a record of this version")
	}
	value := rec[headerLen:]
	if !hmac.Equal(rec[9:headerLen], s.sum(key, rec[1:9], value)) {
		return nil, 0, errors.New("the MAC does not match")
	}
	left := time.UnixMilli(int64(binary.BigEndian.Uint64(rec[1:9]))).Sub(now)
	if left <= 0 {
		return nil, 0, errors.New("expired")
	}
	return value, left, nil
}

// Get returns the value stored under key and how long it has left; ok is
// false for a miss, and for every failure (Redis slow or down, a record
// that is not authentic), which is logged and counted.
func (s *Store) Get(ctx context.Context, key string) (value []byte, left time.Duration, ok bool) {
	full := s.prefix + key
	var rec []byte
	err := s.call(ctx, "get", func(ctx context.Context) error {
		var err error
		rec, err = s.rdb.Get(ctx, full).Bytes()
		if errors.Is(err, redis.Nil) {
			return errMiss
		}
		return err
	})
	if err != nil {
		return nil, 0, false
	}
	value, left, err = s.open(full, rec, time.Now())
	if err != nil {
		s.m.Rejected.Inc()
		s.log.Warn("shared state: a stored value is ignored", "key", full, "why", err.Error())
		return nil, 0, false
	}
	s.m.Calls.WithLabelValues("get", "hit").Inc()
	return value, left, true
}

// Set stores value under key for ttl (nothing for a ttl of 0 or less). A
// failure is counted; the value then lives only in the caller's tier.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) {
	if ttl <= 0 { // Redis would keep it forever
		return
	}
	full := s.prefix + key
	rec := s.seal(full, value, time.Now().Add(ttl))
	_ = s.call(ctx, "set", func(ctx context.Context) error {
		return s.rdb.Set(ctx, full, rec, ttl).Err()
	})
}

// Lease takes key for ttl unless another holder has it: work under a lease
// is done once for all replicas, and a holder that dies lets it go when ttl
// ends. ok is false when another holds it; err is set when Redis cannot
// say, and the caller then does the work itself.
func (s *Store) Lease(ctx context.Context, key string, ttl time.Duration) (release func(), ok bool, err error) {
	full := s.prefix + "lease:" + key
	var token [16]byte
	_, _ = rand.Read(token[:])
	tok := hex.EncodeToString(token[:])
	err = s.call(ctx, "lease", func(ctx context.Context) error {
		var err error
		ok, err = s.rdb.SetNX(ctx, full, tok, ttl).Result()
		return err
	})
	if err != nil || !ok {
		return nil, false, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.budget)
		defer cancel()
		_ = s.call(ctx, "release", func(ctx context.Context) error {
			return s.release.Run(ctx, s.rdb, []string{full}, tok).Err()
		})
	}, true, nil
}

var (
	errMiss        = errors.New("miss")
	errBreakerOpen = errors.New("the shared tier is skipped while Redis is unreachable")
)

// call runs one Redis call inside the budget, through the breaker, and
// records it.
func (s *Store) call(ctx context.Context, op string, f func(context.Context) error) error {
	if !s.breaker.allow() {
		s.m.Calls.WithLabelValues(op, "skipped").Inc()
		return errBreakerOpen
	}
	ctx, cancel := context.WithTimeout(ctx, s.budget)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	s.m.Duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		s.breaker.success()
		if op != "get" { // a get is counted once its record is opened
			s.m.Calls.WithLabelValues(op, "ok").Inc()
		}
	case errors.Is(err, errMiss):
		s.breaker.success()
		s.m.Calls.WithLabelValues(op, "miss").Inc()
	case isReply(err):
		// Redis answered, with an error (out of memory, read-only replica):
		// it is reachable.
		s.breaker.success()
		s.m.Calls.WithLabelValues(op, "error").Inc()
		s.log.Debug("shared state: Redis refused a call", "op", op, "error", err.Error())
	default:
		s.m.Calls.WithLabelValues(op, "error").Inc()
		s.breaker.failure(err)
	}
	return err
}

// isReply reports whether err is an error reply from the server, not a
// failure to reach it.
func isReply(err error) bool {
	var re redis.Error
	var ne net.Error
	return errors.As(err, &re) && !errors.As(err, &ne) && !errors.Is(err, context.DeadlineExceeded)
}
