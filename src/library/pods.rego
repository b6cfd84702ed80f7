package lib.moat.pods

# Shared by every Moat pod template and inlined into it by src/gen.
# Its CEL twin is src/library/pods.cel.yaml: the two must select the same
# containers in the same order, and judge the same updates.

import data.lib.moat.review

params := review.params

# A workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob)
# is judged through its pod template, as Pod Security Admission reads it.
#
# The constants of this file are written inline, not as rules of their own:
# OPA evaluates a rule again on every query, a literal it builds once.
is_workload {
	{"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}[input.review.object.kind]
}

template_of(o) := t {
	o.kind == "CronJob"
	t := o.spec.jobTemplate.spec.template
	is_object(t)
} else := t {
	o.kind != "CronJob"
	t := o.spec.template
	is_object(t)
} else := {}

pod_template := template_of(input.review.object) {
	is_workload
} else := {}

# pod_metadata and pod_spec: the pod's, or the workload's pod template's,
# judged or not; pod_spec without its null fields.
pod_metadata := m {
	is_workload
	m := pod_template.metadata
} else := m {
	not is_workload
	m := input.review.object.metadata
} else := {}

pod_spec := without_nulls(s) {
	not is_workload
	s := input.review.object.spec
} else := without_nulls(s) {
	s := pod_template.spec
} else := {}

# without_nulls(x) is object x less every field whose value is null: the API
# server decodes such a field as absent, and raw manifests checked by gator
# or moat verify carry them (Helm output often does). Its CEL twin is the
# rewrite of has() by src/gen.
without_nulls(x) := x {
	# The cheap test first: objects from the API server have no nulls.
	# (sprintf of a value costs OPA half what json.marshal does.)
	is_object(x)
	not contains(sprintf("%v", [x]), "null")
} else := json.remove(x, [pointer(p) | walk(x, [p, v]); v == null; is_string(p[count(p) - 1])]) {
	is_object(x)
} else := {}

# pointer(p): path p as a JSON pointer ("containers/0/securityContext").
pointer(p) := concat("/", [replace(replace(sprintf("%v", [s]), "~", "~0"), "/", "~1") | s := p[_]])

# is_update: an UPDATE that carries the object before the change, as the API
# server sends it.
is_update {
	input.review.operation == "UPDATE"
	is_object(input.review.oldObject)
}

old_pod_template := template_of(input.review.oldObject) {
	is_update
	is_workload
} else := {}

old_pod_spec := without_nulls(s) {
	is_update
	is_workload
	s := old_pod_template.spec
} else := without_nulls(s) {
	is_update
	not is_workload
	s := input.review.oldObject.spec
} else := {}

list(s, name) := l {
	l := s[name]
	is_array(l)
} else := []

images(s, name) := [object.get(c, "image", "") | c := list(s, name)[_]]

# significant_update is Pod Security Admission's notion: a container or init
# container added, removed or given another image, or an ephemeral container
# added or given another image. Anything else (labels, annotations,
# finalizers, a resize) leaves the pod as it was admitted.
significant_update {
	name := ["containers", "initContainers"][_]
	images(pod_spec, name) != images(old_pod_spec, name)
}

# As Pod Security Admission: an ephemeral container is compared with the
# first old one of its name.
significant_update {
	e := list(pod_spec, "ephemeralContainers")[_]
	same_name := [object.get(o, "image", "") | o := list(old_pod_spec, "ephemeralContainers")[_]; object.get(o, "name", "") == object.get(e, "name", "")]
	not same_name[0] == object.get(e, "image", "")
}

# judged: the review asks for a verdict. Not on DELETE, not for the
# subresources Pod Security Admission ignores (none of them changes the
# spec). A pod on CREATE and in audit; on UPDATE only when it is
# significant. A workload only on an UPDATE that changes its pod template
# (its CREATE is judged through Gatekeeper's expansion into a pod); the pod
# Gatekeeper expands from a workload's UPDATE comes without an old object
# and is not judged, since the workload's own review is.
#
# The object.get calls stay: "not S[input.review.subResource]" is false when
# the review has no subResource (audit, gator), since OPA evaluates the
# undefined reference outside the negation.
judged {
	not {"exec", "attach", "binding", "eviction", "log", "portforward", "proxy", "status"}[object.get(input.review, "subResource", "")]
	judged_operation
}

judged_operation {
	not {"UPDATE", "DELETE"}[object.get(input.review, "operation", "")]
	not is_workload
}

judged_operation {
	is_update
	judged_update
}

judged_update {
	is_workload
	pod_template != old_pod_template
}

judged_update {
	not is_workload
	significant_update
}

# spec is the pod spec under review: empty unless judged.
spec := pod_spec {
	judged
} else := {}

# all_checked is every container of the pod, judged or not, in the order
# containers, initContainers, ephemeralContainers, less those excluded by
# excludedContainers (names) and excludedImages (exact, or a prefix when the
# entry ends in "*"). Ephemeral containers count: kubectl debug adds them
# with an UPDATE of pods/ephemeralcontainers.
all_checked := containers {
	not input.parameters.excludedContainers
	not input.parameters.excludedImages
} else := [c | c := containers[_]; not excluded(c)]

containers := [c | l := pod_spec[["containers", "initContainers", "ephemeralContainers"][_]]; is_array(l); c := l[_]]

# checked is all_checked when the review is judged, else empty.
checked := all_checked {
	judged
} else := []

# fresh is the containers of a judged review whose image the pod (or pod
# template) did not run before: all of them, except on an UPDATE, where only
# those added or given another image. The image templates ask the provider
# about these alone, so a pod keeps living with the images it was admitted
# with.
fresh := [c | c := all_checked[_]; not old_images[object.get(c, "image", "")]] {
	judged
} else := []

old_images := {object.get(c, "image", "") | name := ["containers", "initContainers", "ephemeralContainers"][_]; c := list(old_pod_spec, name)[_]}

excluded(c) {
	c.name == input.parameters.excludedContainers[_]
}

excluded(c) {
	e := input.parameters.excludedImages[_]
	not endswith(e, "*")
	c.image == e
}

excluded(c) {
	e := input.parameters.excludedImages[_]
	endswith(e, "*")
	startswith(c.image, trim_suffix(e, "*"))
}

# names joins the names of containers cs for a message.
names(cs) := concat(", ", [n | n := cs[_].name])
