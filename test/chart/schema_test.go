package chart_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// gatekeeperSchemas are the OpenAPI schemas of the CRDs the chart renders
// objects of: Gatekeeper's, read from deploy/gatekeeper.yaml of the
// Gatekeeper module this project pins, cert-manager's and the Prometheus
// Operator's; keyed by "group/Kind/version".
func gatekeeperSchemas(t *testing.T) map[string]*apiextensions.JSONSchemaProps {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/open-policy-agent/gatekeeper/v3").Output()
	if err != nil {
		t.Fatalf("locating the Gatekeeper module: %v", err)
	}
	schemas := map[string]*apiextensions.JSONSchemaProps{}
	addCRDs(t, schemas, filepath.Join(strings.TrimSpace(string(out)), "deploy", "gatekeeper.yaml"))
	// The optional kinds the chart renders, from their projects' own CRDs, at
	// pinned versions fetched through the module proxy.
	for _, m := range []struct{ module, file string }{
		{"github.com/cert-manager/cert-manager@v1.21.2", "deploy/crds/cert-manager.io_certificates.yaml"},
		{"github.com/cert-manager/cert-manager@v1.21.2", "deploy/crds/cert-manager.io_issuers.yaml"},
		{"github.com/prometheus-operator/prometheus-operator@v0.85.0", "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"},
	} {
		out, err := exec.Command("go", "mod", "download", "-json", m.module).Output()
		if err != nil {
			t.Fatalf("go mod download %s: %v", m.module, err)
		}
		var dl struct{ Dir, Error string }
		if err := json.Unmarshal(out, &dl); err != nil || dl.Dir == "" {
			t.Fatalf("go mod download %s: %v %s", m.module, err, dl.Error)
		}
		addCRDs(t, schemas, filepath.Join(dl.Dir, m.file))
	}
	return schemas
}

// addCRDs adds the schemas of the CRDs in a YAML file, keyed by
// "group/Kind/version".
func addCRDs(t *testing.T, schemas map[string]*apiextensions.JSONSchemaProps, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---") {
		if !strings.Contains(doc, "kind: CustomResourceDefinition") {
			continue
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal([]byte(doc), &crd); err != nil {
			t.Fatal(err)
		}
		for _, v := range crd.Spec.Versions {
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			var internal apiextensions.JSONSchemaProps
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
				t.Fatal(err)
			}
			schemas[crd.Spec.Group+"/"+crd.Spec.Names.Kind+"/"+v.Name] = &internal
		}
	}
}

// Every object the chart renders, with every switch on, is valid against a
// real schema: Kubernetes' own types decoded strictly (an unknown or
// misplaced field fails), Gatekeeper's CRD schemas (validation and unknown
// fields), and constraints against their templates (the framework checks
// parameters when they are added, in TestOwnPodsPassMoatsPolicies). No kind
// is let through without a schema.
func TestRenderedManifestsMatchTheirSchemas(t *testing.T) {
	schemas := gatekeeperSchemas(t)
	objs := render(t, "policies.defender.enabled=true", "policies.podSecurity.level=restricted", "mutation.pinDigests=true", "nodeScan.enabled=true",
		"provider.registryCredentialsSecret=pull", "networkPolicy.enabled=true", "scanner.mode=service",
		"-f=test/chart/testdata/imagepolicy-values.yaml",
		"networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring")
	// cert-manager and ServiceMonitor replace or add objects: a second render.
	objs = append(objs, render(t, "certificates.certManager.enabled=true", "serviceMonitor.enabled=true",
		"serviceMonitor.labels.release=prometheus", "scanner.mode=service")...)
	seen := map[string]int{}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		seen[gvk.Kind]++
		js, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var typed any
		switch gvk.Group + "/" + gvk.Kind {
		case "apps/Deployment":
			typed = &appsv1.Deployment{}
		case "apps/StatefulSet":
			typed = &appsv1.StatefulSet{}
		case "apps/DaemonSet":
			typed = &appsv1.DaemonSet{}
		case "batch/Job":
			typed = &batchv1.Job{}
		case "/Pod":
			typed = &corev1.Pod{}
		case "rbac.authorization.k8s.io/ClusterRole":
			typed = &rbacv1.ClusterRole{}
		case "rbac.authorization.k8s.io/ClusterRoleBinding":
			typed = &rbacv1.ClusterRoleBinding{}
		case "/Service":
			typed = &corev1.Service{}
		case "/Secret":
			typed = &corev1.Secret{}
		case "/ConfigMap":
			typed = &corev1.ConfigMap{}
		case "/ServiceAccount":
			typed = &corev1.ServiceAccount{}
		case "policy/PodDisruptionBudget":
			typed = &policyv1.PodDisruptionBudget{}
		case "networking.k8s.io/NetworkPolicy":
			typed = &networkingv1.NetworkPolicy{}
		}
		if typed != nil {
			if err := yaml.UnmarshalStrict(js, typed); err != nil {
				t.Errorf("%s %s: %v", gvk.Kind, o.GetName(), err)
			}
			continue
		}
		if gvk.Group == "constraints.gatekeeper.sh" {
			continue // validated against the templates' own schemas by the framework
		}
		props := schemas[gvk.Group+"/"+gvk.Kind+"/"+gvk.Version]
		if props == nil {
			t.Errorf("%s %s: no schema for %s; every kind the chart renders must be validated", gvk.Kind, o.GetName(), gvk)
			continue
		}
		validator, _, err := validation.NewSchemaValidator(props)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range validation.ValidateCustomResource(nil, o.Object, validator) {
			t.Errorf("%s %s: %v", gvk.Kind, o.GetName(), e)
		}
		structural, err := structuralschema.NewStructural(props)
		if err != nil {
			t.Fatal(err)
		}
		cp := (&unstructured.Unstructured{Object: o.DeepCopy().Object}).Object
		if unknown := pruning.PruneWithOptions(cp, structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}); len(unknown) > 0 {
			t.Errorf("%s %s: fields the CRD does not know (the API server would drop them): %v", gvk.Kind, o.GetName(), unknown)
		}
	}
	for _, k := range []string{"Deployment", "StatefulSet", "Service", "Secret", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy", "Provider", "ConstraintTemplate", "Job", "Pod",
		"ExpansionTemplate", "Assign", "Certificate", "Issuer", "ServiceMonitor"} {
		if seen[k] == 0 {
			t.Errorf("no %s rendered; the test would prove nothing for it", k)
		}
	}
}

// The schema check itself must catch a broken object.
func TestSchemaCheckCatchesMistakes(t *testing.T) {
	schemas := gatekeeperSchemas(t)
	p := find(render(t), "Provider", "moat").DeepCopy()
	_ = unstructured.SetNestedField(p.Object, "three", "spec", "timeout")
	_ = unstructured.SetNestedField(p.Object, "x", "spec", "caBundel")
	props := schemas["externaldata.gatekeeper.sh/Provider/"+p.GroupVersionKind().Version]
	validator, _, err := validation.NewSchemaValidator(props)
	if err != nil {
		t.Fatal(err)
	}
	if errs := validation.ValidateCustomResource(nil, p.Object, validator); len(errs) == 0 {
		t.Error("a string timeout passed the Provider schema")
	}
	structural, _ := structuralschema.NewStructural(props)
	if unknown := pruning.PruneWithOptions(p.Object, structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}); len(unknown) == 0 {
		t.Error("a misspelt field passed unnoticed")
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(`{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replica":2}}`), &d); err == nil {
		t.Error("strict decoding let a misspelt Deployment field through")
	}
}
