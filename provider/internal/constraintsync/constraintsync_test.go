package constraintsync

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const two = `apiVersion: constraints.gatekeeper.sh/v1beta1
kind: MoatPrivileged
metadata: {name: pss-baseline-privileged}
spec: {enforcementAction: deny}
---
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: MoatHostNamespaces
metadata: {name: pss-baseline-host-namespaces}
`

func TestDecodeReadsEveryDocument(t *testing.T) {
	objs, err := Decode(strings.NewReader(two), strings.NewReader("# nothing here\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetKind() != "MoatPrivileged" || objs[1].GetName() != "pss-baseline-host-namespaces" {
		t.Fatalf("decoded %d objects: %v", len(objs), objs)
	}
	if r := Resource("MoatPrivileged"); r.Resource != "moatprivileged" || r.Group != Group || r.Version != Version {
		t.Errorf("Resource: %v", r)
	}
}

// Anything but a list of uniquely named, cluster-scoped constraints is
// refused, with the object named.
func TestDecodeRefusesWhatIsNotAConstraint(t *testing.T) {
	for _, c := range []struct{ yaml, says string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", `ConfigMap/x has apiVersion "v1"`},
		{"apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: MoatPrivileged\nmetadata: {}\n", "without a kind or a name"},
		{"apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: MoatPrivileged\nmetadata: {name: a, namespace: b}\n", "has a namespace"},
		{two + "---\n" + two, "MoatPrivileged/pss-baseline-privileged appears twice"},
		{"apiVersion: [\n", "constraints:"},
	} {
		_, err := Decode(strings.NewReader(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Decode(%q): %v; want an error saying %q", c.yaml, err, c.says)
		}
	}
}

func TestSyncRefusesMissingSettings(t *testing.T) {
	if _, err := Sync(context.Background(), nil, nil, Options{Timeout: time.Second}); err == nil || !strings.Contains(err.Error(), "name the release") {
		t.Errorf("no release: %v", err)
	}
	if _, err := Sync(context.Background(), nil, []*unstructured.Unstructured{}, Options{Release: "moat"}); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("no timeout: %v", err)
	}
}
