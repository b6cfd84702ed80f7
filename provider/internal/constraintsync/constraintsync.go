// Package constraintsync applies a Helm release's Gatekeeper constraints
// once Gatekeeper serves their kinds, and deletes the release's constraints
// that are no longer wanted: the chart's post-install and post-upgrade hook
// (`moat constraints`). Helm cannot do it itself: it maps every object of a
// release to its API resource before it creates any, and a constraint's
// kind exists only after Gatekeeper has compiled its ConstraintTemplate, so
// a release with both fails ("no matches for kind"). As hooks, constraints
// would be deleted and created again on every upgrade, a window with no
// enforcement; server-side apply updates them in place.
package constraintsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

const (
	// Group and Version of every constraint kind Gatekeeper generates.
	Group   = "constraints.gatekeeper.sh"
	Version = "v1beta1"
	// ReleaseLabel marks the constraints a release applied, with the
	// release's name as value: only those are ever deleted.
	ReleaseLabel = "moat.dev/release"
	// FieldManager is the server-side apply manager of those fields.
	FieldManager = "moat-constraints"
)

var templates = schema.GroupVersionResource{Group: "templates.gatekeeper.sh", Version: "v1", Resource: "constrainttemplates"}

// Resource is the API resource of a constraint kind: Gatekeeper names it
// after the kind, in lower case.
func Resource(kind string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: Group, Version: Version, Resource: strings.ToLower(kind)}
}

// Decode reads constraints from YAML streams (several documents each).
// Every object must be a constraint (Group/Version) with a kind and a name,
// and no kind/name may repeat.
func Decode(streams ...io.Reader) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	seen := map[string]bool{}
	for _, s := range streams {
		dec := yamlutil.NewYAMLOrJSONDecoder(s, 4096)
		for {
			var obj map[string]any
			err := dec.Decode(&obj)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("constraints: %w", err)
			}
			if len(obj) == 0 {
				continue // an empty document
			}
			u := &unstructured.Unstructured{Object: obj}
			key := u.GetKind() + "/" + u.GetName()
			switch {
			case u.GetAPIVersion() != Group+"/"+Version:
				return nil, fmt.Errorf("constraints: %s has apiVersion %q; want %s/%s", key, u.GetAPIVersion(), Group, Version)
			case u.GetKind() == "" || u.GetName() == "":
				return nil, fmt.Errorf("constraints: an object without a kind or a name: %v", obj)
			case u.GetNamespace() != "":
				return nil, fmt.Errorf("constraints: %s has a namespace; constraints are cluster-scoped", key)
			case seen[key]:
				return nil, fmt.Errorf("constraints: %s appears twice", key)
			}
			seen[key] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// Options are a sync's settings.
type Options struct {
	Release string        // the release whose constraints these are
	Timeout time.Duration // how long to wait for Gatekeeper to serve the kinds, and for the API server
	Poll    time.Duration // between attempts (default 1s)
	Log     *slog.Logger
}

// Result is what a sync did.
type Result struct {
	Applied, Deleted []string // kind/name
}

// Sync waits until every kind of desired is served, applies each object
// (labelled with ReleaseLabel) with server-side apply, then deletes the
// objects of every constraint kind that carry the release's label but are
// not in desired. With desired empty it deletes all of the release's
// constraints (the chart's pre-delete hook).
func Sync(ctx context.Context, dyn dynamic.Interface, desired []*unstructured.Unstructured, o Options) (Result, error) {
	if o.Release == "" {
		return Result{}, errors.New("constraints: name the release")
	}
	if o.Timeout <= 0 {
		return Result{}, fmt.Errorf("constraints: timeout %s: must be positive", o.Timeout)
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	var res Result
	if err := waitServed(ctx, dyn, desired, o); err != nil {
		return res, err
	}
	want := map[string]bool{}
	for _, d := range desired {
		obj := d.DeepCopy()
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[ReleaseLabel] = o.Release
		obj.SetLabels(labels)
		body, err := obj.MarshalJSON()
		if err != nil {
			return res, err
		}
		key := obj.GetKind() + "/" + obj.GetName()
		err = retry(ctx, o, "applying "+key, func() error {
			_, err := dyn.Resource(Resource(obj.GetKind())).Patch(ctx, obj.GetName(), types.ApplyPatchType, body,
				metav1.PatchOptions{FieldManager: FieldManager, Force: ptrTrue()})
			return err
		})
		if err != nil {
			return res, err
		}
		want[key] = true
		res.Applied = append(res.Applied, key)
		o.Log.Info("applied", "constraint", key)
	}

	kinds, err := constraintKinds(ctx, dyn, o)
	if err != nil {
		return res, err
	}
	selector := ReleaseLabel + "=" + o.Release
	for _, kind := range kinds {
		var list *unstructured.UnstructuredList
		err := retry(ctx, o, "listing "+kind, func() error {
			var err error
			list, err = dyn.Resource(Resource(kind)).List(ctx, metav1.ListOptions{LabelSelector: selector})
			if apierrors.IsNotFound(err) { // a template whose kind is not served (yet, or any more)
				list, err = &unstructured.UnstructuredList{}, nil
			}
			return err
		})
		if err != nil {
			return res, err
		}
		for _, item := range list.Items {
			key := kind + "/" + item.GetName()
			if want[key] {
				continue
			}
			err := retry(ctx, o, "deleting "+key, func() error {
				err := dyn.Resource(Resource(kind)).Delete(ctx, item.GetName(), metav1.DeleteOptions{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				return err
			})
			if err != nil {
				return res, err
			}
			res.Deleted = append(res.Deleted, key)
			o.Log.Info("deleted", "constraint", key)
		}
	}
	return res, nil
}

// waitServed polls until the API server serves every kind of desired.
func waitServed(ctx context.Context, dyn dynamic.Interface, desired []*unstructured.Unstructured, o Options) error {
	pending := map[string]bool{}
	for _, d := range desired {
		pending[d.GetKind()] = true
	}
	for {
		var lastErr error
		for kind := range pending {
			_, err := dyn.Resource(Resource(kind)).List(ctx, metav1.ListOptions{Limit: 1})
			switch {
			case err == nil:
				delete(pending, kind)
			case !apierrors.IsNotFound(err):
				lastErr = err
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			names := make([]string, 0, len(pending))
			for k := range pending {
				names = append(names, k)
			}
			sort.Strings(names)
			msg := fmt.Sprintf("constraints: Gatekeeper does not serve %s after %s: is each ConstraintTemplate created (kubectl get constrainttemplates, and its status.byPod errors)?",
				strings.Join(names, ", "), o.Timeout)
			if lastErr != nil {
				msg += " Last error: " + lastErr.Error()
			}
			return errors.New(msg)
		case <-time.After(o.Poll):
			o.Log.Info("waiting for Gatekeeper to serve constraint kinds", "pending", len(pending))
		}
	}
}

// constraintKinds are the kinds of every ConstraintTemplate in the
// cluster: where the release's constraints can be.
func constraintKinds(ctx context.Context, dyn dynamic.Interface, o Options) ([]string, error) {
	var list *unstructured.UnstructuredList
	err := retry(ctx, o, "listing ConstraintTemplates", func() error {
		var err error
		list, err = dyn.Resource(templates).List(ctx, metav1.ListOptions{})
		return err
	})
	if err != nil {
		return nil, err
	}
	var kinds []string
	for _, t := range list.Items {
		if kind, _, _ := unstructured.NestedString(t.Object, "spec", "crd", "spec", "names", "kind"); kind != "" {
			kinds = append(kinds, kind)
		}
	}
	sort.Strings(kinds)
	return kinds, nil
}

// retry calls f until it succeeds, fails with an error no retry mends (a
// refused object), or ctx ends.
func retry(ctx context.Context, o Options, what string, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
			return fmt.Errorf("constraints: %s: %w", what, err)
		}
		o.Log.Warn("retrying", "what", what, "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("constraints: %s: %w (gave up after %s)", what, err, o.Timeout)
		case <-time.After(o.Poll):
		}
	}
}

func ptrTrue() *bool { t := true; return &t }
