package config

import (
	"flag"
	"os"
	"time"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/client"
)

// NodeScan is every setting of `moat node-scan`.
type NodeScan struct {
	r           rules
	File        string
	CheckOnly   bool
	MetricsAddr string
	Root        string
	Node        string
	BootIDFile  string
	ProviderURL string
	CA          string
	Cert        string
	Key         string
	Kubeconfig  string
	Interval    time.Duration
	Resend      time.Duration
	Nice        int
	Log         Log
	Engine      Engine
}

// NewNodeScan registers every setting of `moat node-scan` on fs, with its
// default.
func NewNodeScan(fs *flag.FlagSet) *NodeScan {
	s := &NodeScan{r: rules{fs: fs}}
	r := &s.r
	fs.StringVar(&s.File, "config", "", "YAML file of settings named like these flags; flags given on the command line win")
	fs.BoolVar(&s.CheckOnly, "check-config", false, "check the settings, print them, and exit without scanning")
	fs.StringVar(&s.MetricsAddr, "metrics-addr", ":8080", "address of /metrics and /healthz (plain HTTP)")
	fs.StringVar(&s.Root, "root", "/host", "where the node's root file system is mounted, read-only")
	fs.StringVar(&s.Node, "node-name", os.Getenv("NODE_NAME"), "the node's name (default $NODE_NAME, the pod's spec.nodeName)")
	fs.StringVar(&s.BootIDFile, "boot-id-file", "/proc/sys/kernel/random/boot_id", "file holding the node's boot ID (the kubelet reports the same as status.nodeInfo.bootID)")
	fs.StringVar(&s.ProviderURL, "provider-url", "", "the provider's node-report URL, https://moat.moat-system.svc:8444/v1/node-report (required)")
	fs.StringVar(&s.CA, "provider-ca", "", "CA of the provider's serving certificate (required)")
	fs.StringVar(&s.Cert, "tls-cert", "", "client certificate, signed by the provider's --node-report-ca (required)")
	fs.StringVar(&s.Key, "tls-key", "", "its private key (required)")
	fs.StringVar(&s.Kubeconfig, "kubeconfig", "", "kubeconfig for reading the node's pool label; empty: the pod's in-cluster configuration")
	r.duration(&s.Interval, "interval", 6*time.Hour, "", "how often the node is scanned again (also on every new database)")
	r.duration(&s.Resend, "resend", 5*time.Minute, "", "how often the last report is sent again between scans, and the database checked for a new one")
	fs.IntVar(&s.Nice, "nice", 10, "CPU priority of the scan, as nice(1): 0 to 19, higher yields more")
	r.add("nice", func() error {
		if s.Nice < 0 || s.Nice > 19 {
			return usagef("--nice %d: want 0 to 19", s.Nice)
		}
		return nil
	})
	s.Log.register(r)
	s.Engine.register(r)
	return s
}

// Load applies the --config file under the command line and checks every
// setting.
func (s *NodeScan) Load() error {
	if s.File != "" {
		if err := applyFile(s.r.fs, s.File); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	}
	if s.r.fs.NArg() > 0 {
		return usagef("unexpected arguments: %v", s.r.fs.Args())
	}
	if s.Node == "" {
		return usagef("--node-name is required (the chart sets NODE_NAME from spec.nodeName)")
	}
	if s.ProviderURL == "" || s.CA == "" || s.Cert == "" || s.Key == "" {
		return usagef("--provider-url, --provider-ca, --tls-cert and --tls-key are required")
	}
	if s.Engine.DBPath == "" && s.Engine.DBURL == "" {
		return usagef("--db-path or --db-url is required: node scans match against a vulnerability database")
	}
	return s.r.validate()
}

// EngineConfig configures the engine.
func (s *NodeScan) EngineConfig() app.EngineConfig { return s.Engine.config() }

// ClientFiles are the node scanner's client certificate and the provider's
// CA.
func (s *NodeScan) ClientFiles() client.Files {
	return client.Files{CA: s.CA, Cert: s.Cert, Key: s.Key}
}
