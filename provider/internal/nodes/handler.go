package nodes

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
)

// ReportPath is where `moat node-scan` PUTs its reports.
const ReportPath = "/v1/node-report"

// MaxReportBytes bounds a report's body: MaxFindings findings of a few
// hundred bytes each.
const MaxReportBytes = 16 << 20

// Handler serves PUT ReportPath into b: 204 when the report is kept, 400
// with the reason when it is not one, 413 when it is too large.
func Handler(b *Book, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(ReportPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			w.Header().Set("Allow", http.MethodPut)
			http.Error(w, fmt.Sprintf("method %s not allowed: PUT a node report", r.Method), http.StatusMethodNotAllowed)
			return
		}
		var rep Report
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxReportBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rep); err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, fmt.Sprintf("a node report is at most %d bytes", MaxReportBytes), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "not a node report: "+err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			http.Error(w, "not a node report: data after the JSON object", http.StatusBadRequest)
			return
		}
		if err := b.Put(r.Context(), rep); err != nil {
			log.Info("node report refused", "error", err.Error(), "remote", r.RemoteAddr)
			http.Error(w, "node report refused: "+err.Error(), http.StatusBadRequest)
			return
		}
		log.Debug("node report kept", "node", rep.Node, "bootID", rep.BootID, "failed", rep.Error != "")
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("no endpoint %q: PUT %s", r.URL.Path, ReportPath), http.StatusNotFound)
	})
	return mux
}
