package mtls

import (
	"log"
	"log/slog"
	"strings"

	"github.com/moat-dev/moat/provider/internal/metrics"
)

// ErrorLog is the http.Server ErrorLog: net/http reports refused handshakes
// only there ("http: TLS handshake error from ADDR: ERR"). It counts each
// refusal by reason and logs it as structured JSON; other server errors are
// logged as they come.
func ErrorLog(l *slog.Logger, m *metrics.Metrics) *log.Logger {
	return log.New(&errorLogWriter{log: l, metrics: m}, "", 0)
}

type errorLogWriter struct {
	log     *slog.Logger
	metrics *metrics.Metrics
}

const handshakePrefix = "http: TLS handshake error from "

func (w *errorLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(line, handshakePrefix)
	if !ok {
		w.log.Warn("http server", "error", line)
		return len(p), nil
	}
	remote, cause, _ := strings.Cut(rest, ": ")
	reason := HandshakeReason(cause)
	if reason == "" { // a client that connected and left (probes, scanners)
		w.log.Debug("connection closed during TLS handshake", "remote", remote, "error", cause)
		return len(p), nil
	}
	w.metrics.HandshakeFailures.WithLabelValues(reason).Inc()
	w.log.Warn("TLS connection refused", "remote", remote, "reason", reason, "error", cause)
	return len(p), nil
}

// HandshakeReason classifies a handshake error message; "" for a client
// that simply went away.
func HandshakeReason(cause string) string {
	for _, r := range []string{ReasonNoCert, ReasonUntrusted, ReasonExpired, ReasonWrongUsage} {
		if strings.Contains(cause, "moat: "+r+":") {
			return r
		}
	}
	switch {
	case strings.Contains(cause, errNotLoaded.Error()):
		return ReasonNotLoaded
	case strings.Contains(cause, "unsupported versions"), strings.Contains(cause, "protocol version"):
		return ReasonTLSVersion
	case cause == "EOF", strings.HasSuffix(cause, "connection reset by peer"):
		return ""
	}
	return ReasonOtherClient
}
