package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/moat-dev/moat/provider/testenv"
)

// Cluster is etcd, an API server and a controller manager on loopback.
type Cluster struct {
	Dir        string // certificates, kubeconfig, data and logs
	Kubeconfig string // an admin (system:masters) kubeconfig
	Config     *rest.Config
	Client     kubernetes.Interface
	Procs      []*Proc // in start order

	// CAFile and KubeletClientCert/Key are what a node needs to join: the
	// cluster's CA, and the certificate the API server presents to kubelets.
	CAFile string
	ca     *testenv.CA

	bins *Binaries
	opts Options
}

// Options are the settings a node changes; the zero value is the
// loopback-only control plane of test/e2e.
type Options struct {
	// NodeIP, when set, is the address the API server listens on and
	// advertises as the kubernetes Service's endpoint, so pods reach it;
	// every controller runs (a kubelet's pods need the service account token
	// publisher, endpoints, daemon sets...). Only inside a network namespace
	// of the harness's own (IsolateNode).
	NodeIP string
	// ServiceIP is the kubernetes Service's cluster IP (the first of
	// 10.96.0.0/16), in the API server's certificate with NodeIP.
	ServiceIP string
}

// Start starts the control plane in dir. Stop it with Stop.
func Start(ctx context.Context, bins *Binaries, dir string) (*Cluster, error) {
	return StartWith(ctx, bins, dir, Options{})
}

// StartWith is Start with opts.
func StartWith(ctx context.Context, bins *Binaries, dir string, opts Options) (*Cluster, error) {
	c := &Cluster{Dir: dir, bins: bins, opts: opts}
	if err := c.start(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	pki := filepath.Join(c.Dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	kubeCA, err := newCA("moat-e2e-kubernetes-ca")
	if err != nil {
		return err
	}
	caFile := filepath.Join(pki, "ca.crt")
	if err := os.WriteFile(caFile, kubeCA.CertPEM(), 0o644); err != nil {
		return err
	}
	c.CAFile, c.ca = caFile, kubeCA
	hosts := []string{"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if c.opts.NodeIP != "" {
		hosts = append(hosts, c.opts.NodeIP, c.opts.ServiceIP)
	}
	serveCert, serveKey, err := issue(kubeCA, pki, "apiserver", testenv.Leaf{CommonName: "kube-apiserver", Server: true, Hosts: hosts})
	if err != nil {
		return err
	}
	adminCert, adminKey, err := issue(kubeCA, pki, "admin", testenv.Leaf{CommonName: "moat-e2e-admin", Groups: []string{"system:masters"}, Client: true})
	if err != nil {
		return err
	}
	saKeyFile := filepath.Join(pki, "sa.key")
	if err := newKeyFile(saKeyFile); err != nil {
		return err
	}

	// etcd
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	clientPort, peerPort, metricsPort, apiPort := ports[0], ports[1], ports[2], ports[3]
	etcdURL := "http://" + loopback(clientPort)
	etcd, err := start(c.Dir, "etcd", nil, c.bins.Etcd,
		"--name=e2e", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls=http://"+loopback(peerPort), "--initial-advertise-peer-urls=http://"+loopback(peerPort),
		"--initial-cluster=e2e=http://"+loopback(peerPort), "--listen-metrics-urls=http://"+loopback(metricsPort),
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	c.Procs = append(c.Procs, etcd)
	if err := etcd.WaitFor("healthy", 30*time.Second, func() error { return HTTPOK(etcdURL + "/health") }); err != nil {
		return err
	}

	// kube-apiserver
	address := []string{"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		// The API server does not publish a loopback address as the
		// kubernetes Service's endpoint; nothing here needs that Service.
		"--endpoint-reconciler-type=none"}
	if c.opts.NodeIP != "" {
		// Pods reach it through the kubernetes Service; it reaches the
		// kubelet (logs, exec) by the node's address, with the admin
		// certificate.
		address = []string{"--bind-address=0.0.0.0", "--advertise-address=" + c.opts.NodeIP,
			"--kubelet-preferred-address-types=InternalIP,Hostname",
			"--kubelet-client-certificate=" + adminCert, "--kubelet-client-key=" + adminKey}
	}
	api, err := start(c.Dir, "kube-apiserver", nil, c.bins.APIServer, append(address,
		"--etcd-servers="+etcdURL, "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+serveCert, "--tls-private-key-file="+serveKey,
		"--client-ca-file="+caFile, "--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+saKeyFile,
		"--service-account-signing-key-file="+saKeyFile, "--service-cluster-ip-range=10.96.0.0/16",
		// Privileged pods must reach Gatekeeper: its denial is under test.
		// Profiling on, as by default: make bench-admission reads /debug/pprof.
		"--allow-privileged=true", "--profiling=true", "--v=0")...)
	if err != nil {
		return err
	}
	c.Procs = append(c.Procs, api)
	server := "https://" + loopback(apiPort)
	if c.opts.NodeIP != "" {
		server = "https://" + net.JoinHostPort(c.opts.NodeIP, strconv.Itoa(apiPort))
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, server, caFile, adminCert, adminKey); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	err = api.WaitFor("ready", 60*time.Second, func() error {
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
	if err != nil {
		return err
	}

	// kube-controller-manager: the controllers a Deployment needs, and the
	// one that creates each namespace's default ServiceAccount; with a node,
	// all of them.
	controllers := "deployment-controller,replicaset-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller"
	if c.opts.NodeIP != "" {
		controllers = "*"
	}
	kcm, err := start(c.Dir, "kube-controller-manager", nil, c.bins.ControllerManager,
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0", "--controllers="+controllers,
		"--service-account-private-key-file="+saKeyFile, "--root-ca-file="+caFile, "--v=0")
	if err != nil {
		return err
	}
	c.Procs = append(c.Procs, kcm)
	return kcm.WaitFor("creating ServiceAccounts", 60*time.Second, func() error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// KubeVersion is the control plane's Kubernetes version.
func (c *Cluster) KubeVersion() string { return c.bins.KubeVersion }

// Stop stops every process in reverse start order.
func (c *Cluster) Stop() {
	for i := len(c.Procs) - 1; i >= 0; i-- {
		c.Procs[i].Stop()
	}
}

// HTTPOK is nil when GET url answers 200.
func HTTPOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// ServiceAccountKubeconfig writes a kubeconfig at path that acts as the
// ServiceAccount ns/name (a token from the TokenRequest API): what a pod
// of that ServiceAccount may do, and nothing more.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, ns, name, path string) error {
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthority: c.Config.CAFile}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	cfg.CurrentContext = "e2e"
	return clientcmd.WriteToFile(*cfg, path)
}

func writeKubeconfig(path, server, caFile, certFile, keyFile string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: certFile, ClientKey: keyFile}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "admin"}
	cfg.CurrentContext = "e2e"
	return clientcmd.WriteToFile(*cfg, path)
}
