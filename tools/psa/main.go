// Command psa is Kubernetes' Pod Security Admission at its newest release,
// as a process: the tests of test/templates send it pods and updates and
// compare its verdicts with Moat's Pod Security Standards sets. It lives in
// a module of its own because that release's k8s.io/apiserver does not
// build with the Gatekeeper the main module pins.
//
// Each line on stdin is one JSON request; each line on stdout its verdict:
//
//	{"level": "baseline", "version": "latest", "pod": {...}}                        -> the policy's verdict on a pod
//	{"level": "restricted", "version": "v1.30", "old": {...}, "new": {...}, "subresource": ""} -> the admission code's verdict on an UPDATE
//	{"allowed": false, "reasons": ["privileged: container \"a\" must not set ..."]}
//
// and one request lists the versions at which a check begins or changes:
//
//	{"versions": true} -> {"versions": ["v1.0", "v1.8", ...]}
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/pod-security-admission/admission"
	admissionapi "k8s.io/pod-security-admission/admission/api"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/metrics"
	"k8s.io/pod-security-admission/policy"
)

type request struct {
	Level       string      `json:"level"`
	Version     string      `json:"version"`
	Pod         *corev1.Pod `json:"pod"`
	Old         *corev1.Pod `json:"old"`
	New         *corev1.Pod `json:"new"`
	Subresource string      `json:"subresource"`
	Versions    bool        `json:"versions"`
}

type verdict struct {
	Allowed bool     `json:"allowed"`
	Reasons []string `json:"reasons,omitempty"`
	Error   string   `json:"error,omitempty"`
	// Versions answers a request for them.
	Versions []string `json:"versions,omitempty"`
}

func main() {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "psa:", err)
		os.Exit(1)
	}
	ns := &namespaces{}
	adm := &admission.Admission{
		Configuration: &admissionapi.PodSecurityConfiguration{Defaults: admissionapi.PodSecurityDefaults{
			Enforce: "privileged", EnforceVersion: "latest", Audit: "privileged", AuditVersion: "latest", Warn: "privileged", WarnVersion: "latest",
		}},
		Evaluator: eval, Metrics: noMetrics{}, NamespaceGetter: ns, PodLister: noPods{},
	}
	if err := adm.CompleteConfiguration(); err == nil {
		err = adm.ValidateConfiguration()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "psa:", err)
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		var v verdict
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			v.Error = err.Error()
		} else {
			v = answer(eval, adm, ns, req)
		}
		if err := out.Encode(v); err != nil {
			os.Exit(1)
		}
	}
}

func answer(eval policy.Evaluator, adm *admission.Admission, ns *namespaces, req request) verdict {
	if req.Versions {
		return verdict{Versions: checkVersions()}
	}
	level, err := api.ParseLevel(req.Level)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	version, err := api.ParseVersion(req.Version)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	if req.Pod != nil {
		var v verdict
		for _, r := range eval.EvaluatePod(api.LevelVersion{Level: level, Version: version}, &req.Pod.ObjectMeta, &req.Pod.Spec) {
			if !r.Allowed {
				v.Reasons = append(v.Reasons, r.ForbiddenReason+": "+r.ForbiddenDetail)
			}
		}
		v.Allowed = len(v.Reasons) == 0
		return v
	}
	if req.Old == nil || req.New == nil {
		return verdict{Error: "a request carries pod, or old and new"}
	}
	ns.labels = map[string]string{api.EnforceLevelLabel: req.Level, api.EnforceVersionLabel: req.Version}
	attrs := &api.AttributesRecord{
		Name: req.New.Name, Namespace: "psa",
		Kind: corev1.SchemeGroupVersion.WithKind("Pod"), Resource: corev1.SchemeGroupVersion.WithResource("pods"),
		Subresource: req.Subresource, Operation: admissionv1.Update, Object: req.New, OldObject: req.Old,
	}
	resp := adm.Validate(context.Background(), attrs)
	v := verdict{Allowed: resp.Allowed}
	if resp.Result != nil && resp.Result.Message != "" {
		v.Reasons = []string{resp.Result.Message}
	}
	return v
}

// checkVersions are the versions at which some check begins or changes, in
// order: between two of them the policy is the same.
func checkVersions() []string {
	seen := map[int]bool{}
	var minors []int
	for _, c := range policy.DefaultChecks() {
		for _, v := range c.Versions {
			if m := v.MinimumVersion.Minor(); !seen[m] {
				seen[m] = true
				minors = append(minors, m)
			}
		}
	}
	slices.Sort(minors)
	out := make([]string, len(minors))
	for i, m := range minors {
		out[i] = fmt.Sprintf("v1.%d", m)
	}
	return out
}

// namespaces is the one namespace of every UPDATE, labelled with the
// level and version of the request at hand (requests are answered one at
// a time).
type namespaces struct{ labels map[string]string }

func (n *namespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: n.labels}}, nil
}

type noPods struct{}

func (noPods) ListPods(context.Context, string) ([]*corev1.Pod, error) { return nil, nil }

type noMetrics struct{}

func (noMetrics) RecordEvaluation(metrics.Decision, api.LevelVersion, metrics.Mode, api.Attributes) {}
func (noMetrics) RecordExemption(api.Attributes)                                                    {}
func (noMetrics) RecordError(bool, api.Attributes)                                                  {}
