package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// PullSecrets are image pull Secrets read through the Kubernetes API and
// followed as they change (a watch per object, so the RBAC can name each):
// Secrets listed by name, and those of a ServiceAccount's imagePullSecrets.
// Listed Secrets are asked first, in order, then the ServiceAccount's.
type PullSecrets struct {
	client rest.Interface
	log    *slog.Logger
	ctx    context.Context

	mu       sync.RWMutex
	listed   []objectRef
	account  *objectRef
	ofSA     []objectRef                          // the ServiceAccount's imagePullSecrets
	configs  map[objectRef]*configfile.ConfigFile // nil: absent or unreadable
	watching map[objectRef]context.CancelFunc
	// generation counts changes of what the Secrets hold.
	generation atomic.Uint64
}

// Generation changes whenever a watched Secret or the ServiceAccount's
// list changes.
func (p *PullSecrets) Generation() uint64 { return p.generation.Load() }

// objectRef is a namespace and a name.
type objectRef struct{ Namespace, Name string }

func (r objectRef) String() string { return r.Namespace + "/" + r.Name }

// ParseObjectRef reads "namespace/name".
func ParseObjectRef(s string) (objectRef, error) {
	ns, n, ok := strings.Cut(s, "/")
	if !ok || ns == "" || n == "" || strings.Contains(n, "/") {
		return objectRef{}, fmt.Errorf("%q: want namespace/name", s)
	}
	return objectRef{ns, n}, nil
}

// syncTimeout bounds the wait for the first read of each object at start.
const syncTimeout = 10 * time.Second

// WatchPullSecrets starts watching the Secrets listed ("namespace/name")
// and the imagePullSecrets of serviceAccount ("namespace/name", or empty),
// and returns once each was read once (or after syncTimeout; a Secret not
// read yet holds no credential, which can only deny, never admit). The
// watches end with ctx.
func WatchPullSecrets(ctx context.Context, client rest.Interface, listed []string, serviceAccount string, log *slog.Logger) (*PullSecrets, error) {
	p := &PullSecrets{client: client, log: log, ctx: ctx, configs: map[objectRef]*configfile.ConfigFile{}, watching: map[objectRef]context.CancelFunc{}}
	for _, s := range listed {
		r, err := ParseObjectRef(s)
		if err != nil {
			return nil, fmt.Errorf("--pull-secrets: %w", err)
		}
		p.listed = append(p.listed, r)
	}
	var synced []cache.InformerSynced
	for _, r := range p.listed {
		synced = append(synced, p.watchSecret(r))
	}
	if serviceAccount != "" {
		r, err := ParseObjectRef(serviceAccount)
		if err != nil {
			return nil, fmt.Errorf("--pull-secrets-of-service-account: %w", err)
		}
		p.account = &r
		synced = append(synced, p.watchAccount(r))
	}
	wait, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(wait.Done(), synced...) {
		log.Warn("pull secrets: not every Secret could be read yet; images needing them are refused until they are", "after", syncTimeout.String())
	}
	return p, nil
}

// informer watches the one object ref names (a field selector on its
// name, so a Role with resourceNames allows it).
func (p *PullSecrets) informer(ctx context.Context, resource string, obj runtime.Object, ref objectRef, h cache.ResourceEventHandlerFuncs) cache.InformerSynced {
	return watch(ctx, p.client, resource, obj, ref.Namespace, fields.OneTermEqualSelector("metadata.name", ref.Name).String(), h, p.log,
		"grant Moat's ServiceAccount get, list and watch on "+ref.String()+" (the chart's provider.pullSecrets does)").HasSynced
}

func (p *PullSecrets) watchSecret(r objectRef) cache.InformerSynced {
	ctx, cancel := context.WithCancel(p.ctx)
	p.mu.Lock()
	p.watching[r] = cancel
	p.mu.Unlock()
	set := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		cf, err := parseSecret(s)
		if err != nil {
			p.log.Warn("pull secrets: a Secret is ignored", "secret", r.String(), "why", err.Error())
		}
		p.mu.Lock()
		p.configs[r] = cf
		p.mu.Unlock()
		p.generation.Add(1)
	}
	return p.informer(ctx, "secrets", &corev1.Secret{}, r, cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(any) {
			p.mu.Lock()
			delete(p.configs, r)
			p.mu.Unlock()
			p.generation.Add(1)
		},
	})
}

// watchAccount follows the ServiceAccount's imagePullSecrets: a Secret
// added there is watched, one removed is forgotten.
func (p *PullSecrets) watchAccount(r objectRef) cache.InformerSynced {
	set := func(obj any) {
		sa, ok := obj.(*corev1.ServiceAccount)
		if !ok {
			return
		}
		var refs []objectRef
		for _, s := range sa.ImagePullSecrets {
			refs = append(refs, objectRef{r.Namespace, s.Name})
		}
		p.setAccountSecrets(refs)
	}
	return p.informer(p.ctx, "serviceaccounts", &corev1.ServiceAccount{}, r, cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(any) { p.setAccountSecrets(nil) },
	})
}

func (p *PullSecrets) setAccountSecrets(refs []objectRef) {
	p.mu.Lock()
	old := p.ofSA
	p.ofSA = refs
	p.mu.Unlock()
	p.generation.Add(1)
	keep := map[objectRef]bool{}
	for _, r := range p.listed {
		keep[r] = true
	}
	for _, r := range refs {
		keep[r] = true
		p.mu.RLock()
		_, ok := p.watching[r]
		p.mu.RUnlock()
		if !ok {
			p.watchSecret(r)
		}
	}
	for _, r := range old {
		if keep[r] {
			continue
		}
		p.mu.Lock()
		if cancel, ok := p.watching[r]; ok {
			cancel()
			delete(p.watching, r)
			delete(p.configs, r)
		}
		p.mu.Unlock()
	}
}

// parseSecret reads a kubernetes.io/dockerconfigjson or dockercfg Secret.
func parseSecret(s *corev1.Secret) (*configfile.ConfigFile, error) {
	cf := configfile.New("")
	switch s.Type {
	case corev1.SecretTypeDockerConfigJson:
		if err := cf.LoadFromReader(bytes.NewReader(s.Data[corev1.DockerConfigJsonKey])); err != nil {
			return nil, fmt.Errorf("its %s is not a docker config: %v", corev1.DockerConfigJsonKey, err)
		}
	case corev1.SecretTypeDockercfg: // the auths map alone
		var auths map[string]json.RawMessage
		if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &auths); err != nil {
			return nil, fmt.Errorf("its %s is not a docker config: %v", corev1.DockerConfigKey, err)
		}
		b, _ := json.Marshal(map[string]any{"auths": auths})
		if err := cf.LoadFromReader(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("its %s is not a docker config: %v", corev1.DockerConfigKey, err)
		}
	default:
		return nil, fmt.Errorf("its type is %s, want %s or %s", s.Type, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg)
	}
	return cf, nil
}

func (p *PullSecrets) Resolve(t authn.Resource) (authn.Authenticator, error) {
	p.mu.RLock()
	order := append(append([]objectRef(nil), p.listed...), p.ofSA...)
	configs := make([]*configfile.ConfigFile, len(order))
	for i, r := range order {
		configs[i] = p.configs[r]
	}
	p.mu.RUnlock()
	for i, cf := range configs {
		if cf == nil {
			continue
		}
		auth, ok, err := FromDockerConfig(cf, t.RegistryStr())
		if err != nil {
			return nil, fmt.Errorf("pull secret %s: %w", order[i], err)
		}
		if ok {
			return auth, nil
		}
	}
	return authn.Anonymous, nil
}
