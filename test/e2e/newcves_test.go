package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/e2e/cluster"
)

// newCVE is the advisory `moat dev-vulndb --later` adds: it makes the
// clean sample critical.
const newCVE = "MOAT-TEST-0005"

// newCVEs: a Deployment in prod runs an image accepted under database A.
// Database B, which adds a critical CVE for it, replaces the provider's
// database file. Gatekeeper's audit then lists the running pods, naming
// the CVE. With admitRunning (the chart's prod setting here), a pod its
// ReplicaSet recreates is admitted while a new Deployment of the image is
// denied; with admitRunning off the recreated pod is denied.
//
// No kubelet runs here: the test writes each pod's status as the kubelet
// would (phase Running, the image's digest in imageID), a stand-in for it.
func (e *e2e) newCVEs(t *testing.T, dir string) {
	ctx := context.Background()
	db := filepath.Join(dir, "moat-cves", "vulnerability.db")
	vulndb := func(later bool) {
		t.Helper()
		next := db + ".next"
		args := []string{"dev-vulndb", "--out", next}
		if later {
			args = append(args, "--later")
		}
		if out, err := exec.Command(e.moatBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("moat dev-vulndb: %v\n%s", err, out)
		}
		must(t, os.Rename(next, db))
	}
	must(t, os.MkdirAll(filepath.Dir(db), 0o700))
	vulndb(false)
	// A replica of its own, whose database file the test replaces.
	replica, url, _ := e.startReplicaWith(t, dir, "moat-serve-cves", "--db-path", db, "--db-update-interval", "1s")
	defer replica.Stop()
	e.pointProviders(t, url)
	defer e.pointProviders(t, e.moatURL)

	image, digest := testenv.PushSampleTo(t, e.registry, "cves/web:v1", "clean")
	// Scanned before the Deployment, so its pods are admitted at once.
	if err := cluster.Poll(ctx, 60*time.Second, func() error {
		_, err := e.create(healthyPod("prod", "cves-probe", image), true)
		return err
	}); err != nil {
		t.Fatalf("the clean image was never admitted in prod: %v", err)
	}
	web := e.deployment(t, "prod", "cves-web", image, 2)
	defer e.client.AppsV1().Deployments("prod").Delete(ctx, web.Name, metav1.DeleteOptions{}) //nolint:errcheck
	pods := e.waitPods(t, "prod", "cves-web", 2, nil)
	for _, p := range pods {
		e.markRunning(t, p, e.registry+"/cves/web@"+digest)
	}

	// Database B arrives.
	vulndb(true)
	arrived := time.Now()
	prod := e.constraint(t, "moat-image-scan-prod")
	var reported []string
	err := cluster.Poll(ctx, 120*time.Second, func() error {
		got, err := e.apply.Get(ctx, prod)
		if err != nil {
			return err
		}
		vs, _, _ := unstructured.NestedSlice(got.Object, "status", "violations")
		reported = nil
		for _, v := range vs {
			m := v.(map[string]any)
			if m["namespace"] == "prod" && strings.HasPrefix(fmt.Sprint(m["name"]), "cves-web-") && strings.Contains(fmt.Sprint(m["message"]), newCVE) {
				reported = append(reported, fmt.Sprint(m["name"]))
			}
		}
		if len(reported) < 2 {
			return fmt.Errorf("the audit lists %v with %s", reported, newCVE)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the audit never listed both running pods with the new CVE: %v", err)
	}
	t.Logf("the audit listed both running pods with %s %s after the database file changed", newCVE, time.Since(arrived).Round(100*time.Millisecond))

	// admitRunning on: a pod its ReplicaSet recreates runs an image its
	// ReplicaSet already runs.
	must(t, e.client.CoreV1().Pods("prod").Delete(ctx, pods[0].Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}))
	e.waitPods(t, "prod", "cves-web", 2, map[string]bool{pods[0].Name: true})

	// A new Deployment of the image is another workload: denied.
	_, err = e.client.AppsV1().Deployments("prod").Create(ctx, e.deploymentOf("prod", "cves-new", image, 1), metav1.CreateOptions{})
	denied(t, "a new Deployment of an image with a new critical CVE", err, newCVE)

	// admitRunning off: the recreated pod is denied, naming the CVE.
	e.setParameter(t, prod, "admitRunning", false)
	defer e.setParameter(t, prod, "admitRunning", true)
	must(t, e.client.CoreV1().Pods("prod").Delete(ctx, pods[1].Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}))
	err = cluster.Poll(ctx, 60*time.Second, func() error {
		rss, err := e.client.AppsV1().ReplicaSets("prod").List(ctx, metav1.ListOptions{LabelSelector: "app=cves-web"})
		if err != nil {
			return err
		}
		for _, rs := range rss.Items {
			for _, c := range rs.Status.Conditions {
				if c.Type == appsv1.ReplicaSetReplicaFailure && strings.Contains(c.Message, newCVE) {
					return nil
				}
			}
		}
		return fmt.Errorf("no ReplicaSet reports a denial naming %s", newCVE)
	})
	if err != nil {
		t.Error(err)
	}
}

// deploymentOf is a Deployment of n healthy pods (the Defender set and
// Pod Security restricted pass them) running image.
func (e *e2e) deploymentOf(ns, name, image string, n int32) *appsv1.Deployment {
	pod := healthyPod(ns, name, image)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(n),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
}

func (e *e2e) deployment(t *testing.T, ns, name, image string, n int32) *appsv1.Deployment {
	t.Helper()
	d, err := e.client.AppsV1().Deployments(ns).Create(context.Background(), e.deploymentOf(ns, name, image, n), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("Deployment %s/%s: %v", ns, name, err)
	}
	return d
}

// waitPods waits until the Deployment's ReplicaSet has n pods none of which
// is in gone, and returns them.
func (e *e2e) waitPods(t *testing.T, ns, app string, n int, gone map[string]bool) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := cluster.Poll(context.Background(), 60*time.Second, func() error {
		list, err := e.client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		pods = nil
		for _, p := range list.Items {
			if !gone[p.Name] && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		if len(pods) != n {
			return fmt.Errorf("%d pods of %s, want %d", len(pods), app, n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the ReplicaSet's pods: %v", err)
	}
	return pods
}

// markRunning writes pod's status as a kubelet that started it would (a
// stand-in for the kubelet this cluster does not have).
func (e *e2e) markRunning(t *testing.T, pod corev1.Pod, imageID string) {
	t.Helper()
	now := metav1.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &now}
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: imageID, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	if _, err := e.client.CoreV1().Pods(pod.Namespace).UpdateStatus(context.Background(), &pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod %s status: %v", pod.Name, err)
	}
}

// constraint is the installed constraint name.
func (e *e2e) constraint(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	for _, c := range e.constraints {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no constraint %s installed", name)
	return nil
}

// setParameter sets one parameter of constraint c and waits until
// Gatekeeper enforces that generation.
func (e *e2e) setParameter(t *testing.T, c *unstructured.Unstructured, name string, value any) {
	t.Helper()
	ctx := context.Background()
	got, err := e.apply.Get(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got = got.DeepCopy()
	must(t, unstructured.SetNestedField(got.Object, value, "spec", "parameters", name))
	unstructured.RemoveNestedField(got.Object, "status")
	unstructured.RemoveNestedField(got.Object, "metadata", "managedFields")
	// No precondition: Gatekeeper writes the constraint's status all the
	// time, and an apply carrying the read resourceVersion then conflicts.
	unstructured.RemoveNestedField(got.Object, "metadata", "resourceVersion")
	applied, err := e.apply.Apply(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	gen := applied.GetGeneration()
	e.waitStatus(t, c, func(st map[string]any) bool {
		pods, _ := st["byPod"].([]any)
		if len(pods) == 0 {
			return false
		}
		p := pods[0].(map[string]any)
		og, _ := p["observedGeneration"].(int64)
		return p["enforced"] == true && og >= gen
	})
}
