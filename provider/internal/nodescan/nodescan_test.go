package nodescan_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/grypescan"
	"github.com/moat-dev/moat/provider/internal/nodes"
	"github.com/moat-dev/moat/provider/internal/nodescan"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/shared"
	"github.com/moat-dev/moat/provider/internal/vulndb"
	"github.com/moat-dev/moat/provider/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const boot = "6b1f5c2e-3d4a-4f7b-9a0e-2c8d1e5f7a9b"

// node is a node's root file system (this machine's Debian os-release and
// dpkg database) and an engine whose database marks its bash critical.
func node(t *testing.T) (root string, engine *grypescan.Engine, bash string) {
	t.Helper()
	dir := t.TempDir()
	root, _ = testenv.HostRoot(t, dir, false)
	dbFile := filepath.Join(dir, "vulnerability.db")
	bash = testenv.WriteHostDB(t, dbFile)
	db, err := vulndb.New(vulndb.Options{Dir: t.TempDir()}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Load(dbFile); err != nil {
		t.Fatal(err)
	}
	engine, err = grypescan.New(grypescan.Options{Registry: testenv.RegistryClient(t)}, db)
	if err != nil {
		t.Fatal(err)
	}
	return root, engine, bash
}

func agent(t *testing.T, env *testenv.Env, root string, e *grypescan.Engine, name, pool string) *nodescan.Agent {
	t.Helper()
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(bootFile, []byte(boot+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := nodescan.New(nodescan.Options{Root: root, Node: name, Pool: pool, BootIDFile: bootFile, ReportURL: env.ReportURL,
		Client: env.NodeClient(t), Interval: time.Hour, Resend: time.Minute}, e, nodescan.NewMetrics(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// ask POSTs node keys to /nodes as Gatekeeper does.
func ask(t *testing.T, env *testenv.Env, keys ...string) map[string]client.Item {
	t.Helper()
	resp, code, err := client.Lookup(context.Background(), env.Client(t), env.URL+"/nodes", keys)
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST /nodes: %d %v", code, err)
	}
	out := map[string]client.Item{}
	for _, it := range resp.Response.Items {
		out[it.Key] = it
	}
	return out
}

func value(t *testing.T, it client.Item) answer.Node {
	t.Helper()
	if it.Error != "" {
		t.Fatalf("%s: %s", it.Key, it.Error)
	}
	var v answer.Node
	dec := json.NewDecoder(strings.NewReader(string(it.Value)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", it.Key, err)
	}
	return v
}

func TestANodesReportReachesGatekeepersAnswersForItsBootOnly(t *testing.T) {
	root, engine, bash := node(t)
	env := testenv.Start(t, testenv.WithNodeReports(testenv.Defaults(), time.Hour))
	r := agent(t, env, root, engine, "aks-system-0", "system").Scan(context.Background())
	if r.Error != "" || r.BootID != boot {
		t.Fatalf("the scan: %+v", r)
	}

	got := ask(t, env, "aks-system-0/"+boot, "aks-system-0/0d9e8f7a-0000-4000-8000-000000000000", "aks-user-1/"+boot, "not a node key")
	v := value(t, got["aks-system-0/"+boot])
	if v.Schema != answer.NodeSchema || v.Pool != "system" || !strings.HasPrefix(v.OS, "Debian") || v.Status != answer.Rejected ||
		!strings.Contains(v.Reason, testenv.HostCVE+" (critical, bash "+bash+", fixed in "+bash+"+moat1)") {
		t.Errorf("the node's answer: %+v %+v", v, v.Scan)
	}
	if len(v.Findings) != 1 || v.Findings[0].Package != "bash" || v.Vulnerabilities.Critical != 1 {
		t.Errorf("findings: %+v", v.Findings)
	}
	if v := value(t, got["aks-system-0/0d9e8f7a-0000-4000-8000-000000000000"]); v.Status != answer.ReportNotAvailable || !strings.Contains(v.Reason, "booted since") {
		t.Errorf("a report of another boot is never served: %+v", v.Scan)
	}
	if v := value(t, got["aks-user-1/"+boot]); v.Status != answer.ReportNotAvailable || !strings.Contains(v.Reason, "no report from the node scanner") {
		t.Errorf("a node with no report: %+v", v.Scan)
	}
	if e := got["not a node key"].Error; !strings.Contains(e, "<node name>/<boot ID>") {
		t.Errorf("a key that is not a node's: %q", e)
	}
}

func TestOnlyNodeScannersSendReportsAndOnlyReportsAreKept(t *testing.T) {
	env := testenv.Start(t, testenv.WithNodeReports(testenv.Defaults(), time.Hour))
	ok := nodes.Report{Node: "node-1", BootID: boot, Error: "disk unreadable", FailedAt: time.Now().UTC()}

	// Gatekeeper's certificate opens /validate, not the report listener.
	if err := nodescan.Send(context.Background(), env.Client(t), env.ReportURL, ok); err == nil {
		t.Error("a client certificate of Gatekeeper's CA sent a node report")
	}
	// The node scanner's certificate does not open /validate.
	if _, _, err := client.Lookup(context.Background(), env.NodeClient(t), env.URL+"/validate", []string{"nginx"}); err == nil {
		t.Error("the node scanner's certificate asked /validate")
	}

	nc := env.NodeClient(t)
	for body, want := range map[string]string{
		`{"node":"Node_1","bootID":"` + boot + `","error":"x","failedAt":"2026-12-01T00:00:00Z"}`:           "not a node name",
		`{"node":"node-1","bootID":"not a boot id","error":"x","failedAt":"2026-12-01T00:00:00Z"}`:          "not a boot ID",
		`{"node":"node-1","bootID":"` + boot + `"}`:                                                         "either a result or an error",
		`{"node":"node-1","bootID":"` + boot + `","error":"x","failedAt":"2026-12-01T00:00:00Z","extra":1}`: "unknown field",
		`{"node":`: "not a node report",
	} {
		req, _ := http.NewRequest(http.MethodPut, env.ReportURL, strings.NewReader(body))
		resp, err := nc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), want) {
			t.Errorf("%s: %d %s", body, resp.StatusCode, msg)
		}
	}
	if err := nodescan.Send(context.Background(), nc, env.ReportURL, ok); err != nil {
		t.Fatal(err)
	}
	if v := value(t, ask(t, env, "node-1/"+boot)["node-1/"+boot]); v.Status != answer.ScanFailed || v.Reason != "disk unreadable" {
		t.Errorf("a failed scan is scan_failed with its reason: %+v", v.Scan)
	}
	// An older report than the one held does not replace it.
	old := nodes.Report{Node: "node-1", BootID: boot, Result: &scanResult, Pool: "old"}
	if err := nodescan.Send(context.Background(), nc, env.ReportURL, old); err != nil {
		t.Fatal(err)
	}
	if v := value(t, ask(t, env, "node-1/"+boot)["node-1/"+boot]); v.Status != answer.ScanFailed {
		t.Errorf("an older report replaced a newer one: %+v", v.Scan)
	}
}

func TestAReportOlderThanTheMaximumAgeIsNotServed(t *testing.T) {
	env := testenv.Start(t, testenv.WithNodeReports(testenv.Defaults(), time.Hour))
	stale := nodes.Report{Node: "node-1", BootID: boot, Result: &scanResult}
	if err := nodescan.Send(context.Background(), env.NodeClient(t), env.ReportURL, stale); err != nil {
		t.Fatal(err)
	}
	if v := value(t, ask(t, env, "node-1/"+boot)["node-1/"+boot]); v.Status != answer.ReportNotAvailable || !strings.Contains(v.Reason, "older than the maximum age 1h0m0s") {
		t.Errorf("a report two hours old: %+v", v.Scan)
	}
}

// scanResult is a clean scan two hours ago.
var scanResult = scan.Result{ScannedAt: time.Now().Add(-2 * time.Hour).UTC()}

func TestEveryReplicaServesTheReportOneReceived(t *testing.T) {
	r := testenv.StartRedis(t)
	cfg := testenv.WithNodeReports(testenv.Defaults(), time.Hour)
	cfg.Shared = shared.Options{URL: r.URL, PasswordFile: r.PasswordFile, MACKeyFile: r.MACKeyFile, Prefix: "moat:", Budget: 250 * time.Millisecond}
	one, two := testenv.Start(t, cfg), testenv.Start(t, cfg)
	rep := nodes.Report{Node: "node-1", BootID: boot, Pool: "pool-a", Error: "disk unreadable", FailedAt: time.Now().UTC()}
	if err := nodescan.Send(context.Background(), one.NodeClient(t), one.ReportURL, rep); err != nil {
		t.Fatal(err)
	}
	if v := value(t, ask(t, two, "node-1/"+boot)["node-1/"+boot]); v.Status != answer.ScanFailed || v.Pool != "pool-a" {
		t.Errorf("the other replica's answer: %+v %+v", v, v.Scan)
	}
	// A value in the tier that the MAC does not seal is not a report.
	if err := r.Client().Set(context.Background(), "moat:node:node-2", `{"node":"node-2","bootID":"`+boot+`","error":"forged","failedAt":"2026-12-01T00:00:00Z"}`, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if v := value(t, ask(t, two, "node-2/"+boot)["node-2/"+boot]); v.Status != answer.ReportNotAvailable {
		t.Errorf("a forged report was served: %+v", v.Scan)
	}
}
