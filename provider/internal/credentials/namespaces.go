package credentials

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Namespaces are the pull Secrets and ServiceAccounts of the namespaces
// whose own credentials Moat may use for their namespaced keys: a watch of
// each namespace's kubernetes.io/dockerconfigjson Secrets and of its
// ServiceAccounts (or of all namespaces').
type Namespaces struct {
	watched map[string]bool // nil: every namespace
	// secrets and accounts are the informers' stores, one per watch.
	secrets, accounts []cache.Store
	log               *slog.Logger
	// generation counts changes, as PullSecrets' does.
	generation atomic.Uint64
}

// All names every namespace in --namespace-credentials.
const All = "*"

// WatchNamespaces starts watching the namespaces listed (or every one, with
// All) and returns once each watch has listed once, or after syncTimeout.
func WatchNamespaces(ctx context.Context, client rest.Interface, namespaces []string, log *slog.Logger) (*Namespaces, error) {
	n := &Namespaces{log: log}
	list := namespaces
	if len(namespaces) == 1 && namespaces[0] == All {
		list = []string{metav1.NamespaceAll}
	} else {
		n.watched = map[string]bool{}
		for _, ns := range namespaces {
			if ns == "" || ns == All {
				return nil, fmt.Errorf("--namespace-credentials: %q: list namespaces, or give * alone", ns)
			}
			n.watched[ns] = true
		}
	}
	// Every event changes what a scope resolves to: sessions start anew.
	changed := func(any) { n.generation.Add(1) }
	h := cache.ResourceEventHandlerFuncs{AddFunc: changed, UpdateFunc: func(_, o any) { changed(o) }, DeleteFunc: changed}
	const grant = "grant Moat's ServiceAccount get, list and watch on them (the chart's provider.namespaceCredentials does)"
	var synced []cache.InformerSynced
	for _, ns := range list {
		secrets := watch(ctx, client, "secrets", &corev1.Secret{}, ns,
			fields.OneTermEqualSelector("type", string(corev1.SecretTypeDockerConfigJson)).String(), h, log, grant)
		accounts := watch(ctx, client, "serviceaccounts", &corev1.ServiceAccount{}, ns, "", h, log, grant)
		n.secrets = append(n.secrets, secrets.GetStore())
		n.accounts = append(n.accounts, accounts.GetStore())
		synced = append(synced, secrets.HasSynced, accounts.HasSynced)
	}
	wait, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(wait.Done(), synced...) {
		log.Warn("namespace credentials: not every namespace could be read yet; their namespaced keys use the cluster-wide credentials until they are", "after", syncTimeout.String())
	}
	return n, nil
}

// Generation changes whenever a watched Secret or ServiceAccount does.
func (n *Namespaces) Generation() uint64 { return n.generation.Load() }

// Keychain is s's credentials: the Secrets s names, then its
// ServiceAccount's imagePullSecrets, all in s's namespace. A namespace Moat
// does not watch has none here (the cluster-wide credentials follow).
func (n *Namespaces) Keychain(s *Scope) authn.Keychain {
	return scoped{n: n, s: s}
}

type scoped struct {
	n *Namespaces
	s *Scope
}

func (k scoped) Resolve(t authn.Resource) (authn.Authenticator, error) {
	if k.n.watched != nil && !k.n.watched[k.s.Namespace] {
		return authn.Anonymous, nil
	}
	names := append([]string(nil), k.s.Secrets...)
	if o, ok := get(k.n.accounts, k.s.Namespace+"/"+k.s.ServiceAccount); ok {
		for _, r := range o.(*corev1.ServiceAccount).ImagePullSecrets {
			names = append(names, r.Name)
		}
	}
	for _, name := range names {
		o, ok := get(k.n.secrets, k.s.Namespace+"/"+name)
		if !ok {
			continue
		}
		cf, err := parseSecret(o.(*corev1.Secret))
		if err != nil {
			continue // not a docker config: it holds no credential
		}
		auth, ok, err := FromDockerConfig(cf, t.RegistryStr())
		if err != nil {
			return nil, fmt.Errorf("pull secret %s/%s: %w", k.s.Namespace, name, err)
		}
		if ok {
			return auth, nil
		}
	}
	return authn.Anonymous, nil
}

// get is the object under key in whichever store holds it.
func get(stores []cache.Store, key string) (any, bool) {
	for _, s := range stores {
		if o, ok, _ := s.GetByKey(key); ok {
			return o, true
		}
	}
	return nil, false
}
