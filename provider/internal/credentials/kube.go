package credentials

import (
	"context"
	"log/slog"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// watch runs an informer of resource in ns (every namespace when empty),
// selected by the field selector, until ctx ends, with h on its events. A
// read the API server refuses is logged with grant, which says what to
// grant Moat's ServiceAccount.
func watch(ctx context.Context, client rest.Interface, resource string, obj runtime.Object, ns, selector string,
	h cache.ResourceEventHandler, log *slog.Logger, grant string) cache.SharedIndexInformer {
	lw := cache.NewFilteredListWatchFromClient(client, resource, ns, func(o *metav1.ListOptions) { o.FieldSelector = selector })
	inf := cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		log.Warn("cannot read "+resource+" in "+namespaceName(ns)+"; "+grant, "error", err.Error())
	})
	_, _ = inf.AddEventHandler(h)
	go inf.Run(ctx.Done())
	return inf
}

func namespaceName(ns string) string {
	if ns == metav1.NamespaceAll {
		return "every namespace"
	}
	return "namespace " + ns
}
