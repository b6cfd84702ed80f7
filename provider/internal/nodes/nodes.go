// Package nodes holds the provider's side of node scanning: the reports
// `moat node-scan` sends (PUT /v1/node-report, on a listener of their own),
// kept per node in the shared tier so every replica serves the same one, and
// the moat.node.v1 answers Gatekeeper asks for (POST /nodes), judged by the
// provider's scan policy. A report is served only for the boot it describes,
// and only while it is younger than the maximum age.
package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/protocol"
	"github.com/moat-dev/moat/provider/internal/scan"
)

// Report is one node's scan, as `moat node-scan` sends it.
type Report struct {
	// Node is the node's name (spec.nodeName of the scanner's pod).
	Node string `json:"node"`
	// BootID identifies the boot the scan saw (/proc/sys/kernel/random/boot_id,
	// which the kubelet reports as status.nodeInfo.bootID).
	BootID string `json:"bootID"`
	// Pool is the node pool from the node's labels; empty when none.
	Pool string `json:"pool,omitempty"`
	// Result is the finished scan; nil when it failed.
	Result *scan.Result `json:"result,omitempty"`
	// Error says why the scan failed, and FailedAt when.
	Error    string    `json:"error,omitempty"`
	FailedAt time.Time `json:"failedAt,omitzero"`
}

var (
	// A node's name is a DNS subdomain.
	nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	bootID   = regexp.MustCompile(`^[0-9a-fA-F-]{1,64}$`)
	// A pool is a label value.
	poolName = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9]|[A-Za-z0-9])?$`)
)

// MaxFindings bounds the findings one report may carry: far more than any
// node has, so that a report is never cut, and a body is never unbounded.
const MaxFindings = 20000

// Validate names what is wrong with r.
func (r Report) Validate() error {
	switch {
	case len(r.Node) > 253 || !nodeName.MatchString(r.Node):
		return fmt.Errorf("node %q is not a node name (a DNS subdomain)", clip(r.Node))
	case !bootID.MatchString(r.BootID):
		return fmt.Errorf("bootID %q is not a boot ID (hex digits and dashes, as /proc/sys/kernel/random/boot_id)", clip(r.BootID))
	case !poolName.MatchString(r.Pool):
		return fmt.Errorf("pool %q is not a label value", clip(r.Pool))
	case (r.Result == nil) == (r.Error == ""):
		return fmt.Errorf("a report carries either a result or an error, not %s", map[bool]string{true: "both", false: "neither"}[r.Result != nil])
	case r.Result != nil && r.Result.ScannedAt.IsZero():
		return fmt.Errorf("result.scannedAt is missing")
	case r.Result != nil && len(r.Result.Findings) > MaxFindings:
		return fmt.Errorf("%d findings: more than %d", len(r.Result.Findings), MaxFindings)
	case r.Error != "" && r.FailedAt.IsZero():
		return fmt.Errorf("failedAt is missing")
	}
	return nil
}

// at is when the report was made.
func (r Report) at() time.Time {
	if r.Result != nil {
		return r.Result.ScannedAt
	}
	return r.FailedAt
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Options configure a Book.
type Options struct {
	// Policy judges a report's findings, as it judges images'.
	Policy scan.Policy
	// MaxAge is the oldest a report may be and still be served: past it,
	// the node's answer is report_not_available (is its scanner running?).
	MaxAge time.Duration
	// Shared is the tier the replicas share; nil keeps reports in this
	// process only.
	Shared checks.Store
	// Refresh is how long a replica serves a report it holds before it
	// reads the shared tier again for a newer one.
	Refresh time.Duration
}

// Book keeps the newest report of each node. Safe for concurrent use.
type Book struct {
	opts  Options
	now   func() time.Time
	mu    sync.Mutex
	local map[string]held
}

type held struct {
	r    Report
	read time.Time // when it was put or last read from the shared tier
}

// New returns an empty Book.
func New(opts Options) (*Book, error) {
	if opts.MaxAge <= 0 {
		return nil, fmt.Errorf("node reports: the maximum age is %s; want a positive duration such as 24h", opts.MaxAge)
	}
	if err := opts.Policy.Validate(); err != nil {
		return nil, err
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 30 * time.Second
	}
	return &Book{opts: opts, now: time.Now, local: map[string]held{}}, nil
}

func storeKey(node string) string { return "node:" + node }

// Put validates r and keeps it as its node's newest report, here and in the
// shared tier. An older report than the one held is ignored.
func (b *Book) Put(ctx context.Context, r Report) error {
	if err := r.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	cur, ok := b.local[r.Node]
	if ok && cur.r.at().After(r.at()) {
		b.mu.Unlock()
		return nil
	}
	b.local[r.Node] = held{r: r, read: b.now()}
	b.mu.Unlock()
	if b.opts.Shared != nil {
		body, err := json.Marshal(r)
		if err != nil {
			return err
		}
		// The tier keeps it as long as it can be served.
		if ttl := r.at().Add(b.opts.MaxAge).Sub(b.now()); ttl > 0 {
			b.opts.Shared.Set(ctx, storeKey(r.Node), body, ttl)
		}
	}
	return nil
}

// report is node's newest report known here or in the shared tier.
func (b *Book) report(ctx context.Context, node string) (Report, bool) {
	b.mu.Lock()
	cur, ok := b.local[node]
	b.mu.Unlock()
	if b.opts.Shared == nil || (ok && b.now().Sub(cur.read) < b.opts.Refresh) {
		return cur.r, ok
	}
	raw, _, found := b.opts.Shared.Get(ctx, storeKey(node))
	var r Report
	if !found || json.Unmarshal(raw, &r) != nil || r.Validate() != nil || r.Node != node {
		return cur.r, ok // what this replica holds, if anything
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok && cur.r.at().After(r.at()) {
		r = cur.r
	}
	b.local[node] = held{r: r, read: b.now()}
	return r, true
}

// ParseKey splits a node key, "<node name>/<boot ID>".
func ParseKey(key string) (node, boot string, err error) {
	node, boot, ok := strings.Cut(key, "/")
	if !ok || len(node) > 253 || !nodeName.MatchString(node) || !bootID.MatchString(boot) {
		return "", "", fmt.Errorf("key %q is not <node name>/<boot ID> (the node's metadata.name and status.nodeInfo.bootID)", clip(key))
	}
	return node, boot, nil
}

// Answer is the moat.node.v1 value for key, encoded as a ProviderResponse
// item's body, or a per-key error for a key that is not a node key.
func (b *Book) Answer(ctx context.Context, key string) (body []byte, bad bool) {
	node, boot, err := ParseKey(key)
	if err != nil {
		return protocol.ErrorBody(err.Error()), true
	}
	v := b.Value(ctx, node, boot)
	body, err = protocol.ValueBody(v)
	if err != nil {
		return protocol.ErrorBody("encoding the answer: " + err.Error()), true
	}
	return body, false
}

// Value is node's answer for its boot boot.
func (b *Book) Value(ctx context.Context, node, boot string) answer.Node {
	v := answer.Node{Schema: answer.NodeSchema, Node: node, BootID: boot}
	r, ok := b.report(ctx, node)
	now := b.now()
	switch {
	case !ok:
		v.Scan = notAvailable(fmt.Sprintf("no report from the node scanner for node %s: is Moat's node-scan DaemonSet running on it?", node))
		return v
	case r.BootID != boot:
		v.Scan = notAvailable(fmt.Sprintf("the newest report of node %s is of boot %s (%s); the node has booted since (restarted or re-imaged) and is scanned again", node, r.BootID, stamp(r.at())))
		return v
	case now.Sub(r.at()) > b.opts.MaxAge:
		v.Scan = notAvailable(fmt.Sprintf("the newest report of node %s is from %s, older than the maximum age %s (--node-report-max-age): is its node scanner running?", node, stamp(r.at()), b.opts.MaxAge))
		return v
	}
	v.Pool = r.Pool
	if r.Error != "" {
		s := scan.Failed(fmt.Errorf("%s", r.Error), r.FailedAt)
		v.Scan = &s
		return v
	}
	v.OS = r.Result.OS
	s := b.opts.Policy.Judge(*r.Result, now)
	v.Scan = &s
	return v
}

func notAvailable(reason string) *answer.Scan {
	s := scan.Pending(reason)
	return &s
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// PoolLabels are the labels the clouds put the node pool in, in the order
// they are read: AKS, EKS (managed node groups), GKE, then Karpenter's
// NodePool and kOps' instance group.
var PoolLabels = []string{
	"kubernetes.azure.com/agentpool",
	"eks.amazonaws.com/nodegroup",
	"cloud.google.com/gke-nodepool",
	"karpenter.sh/nodepool",
	"kops.k8s.io/instancegroup",
}

// PoolOf is the node pool named by a node's labels; empty when none names
// one.
func PoolOf(labels map[string]string) string {
	for _, l := range PoolLabels {
		if v := labels[l]; v != "" {
			return v
		}
	}
	return ""
}
