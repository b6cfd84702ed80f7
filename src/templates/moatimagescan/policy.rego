package moatimagescan

import data.lib.moat.external
import data.lib.moat.images
import data.lib.moat.pods
import data.lib.moat.review

params := pods.params

setting(name, default_value) := external.setting(name, default_value)

provider := setting("provider", "moat")

on_list(repo, list) {
	images.under(repo, params[list][_])
}

# decision(c) is [verdict, reason]: verdict "accept", "reject" or "scan".
decision(c) := ["reject", "on alwaysReject"] {
	on_list(images.repository(c.image), "alwaysReject")
} else := ["accept", ""] {
	on_list(images.repository(c.image), "alwaysAccept")
} else := ["scan", ""] {
	on_list(images.repository(c.image), "alwaysScanResult")
} else := ["scan", ""] {
	setting("defaultPolicy", "scan-result") == "scan-result"
} else := ["accept", ""] {
	setting("defaultPolicy", "scan-result") == "accept"
} else := ["reject", "defaultPolicy is reject"]

scanned := [c | c := pods.fresh[_]; is_string(c.image); decision(c)[0] == "scan"]

# k(c): the key of c's image.
k(c) := external.key(c.image, pods.pod_spec)

keys := sort({k(c) | c := scanned[_]})

response := external_data({"provider": provider, "keys": keys}) {
	count(keys) > 0
}

answers := external.answers(response)

# verdict(c) for a scanned image: [verdict, reason].
verdict(c) := ["error", external.failure(response, answers, k(c))] {
	external.failure(response, answers, k(c))
} else := [setting("reportPending", "reject"), "its scan is not finished (report_not_available)"] {
	answers[k(c)].status == "report_not_available"
} else := [setting("scanFailed", "reject"), sprintf("its scan failed: %v", [object.get(answers[k(c)], "reason", "no reason given")])] {
	answers[k(c)].status == "scan_failed"
} else := ["reject", sprintf("its scan was rejected: %v", [object.get(answers[k(c)], "reason", "no reason given")])] {
	answers[k(c)].status == "rejected"
} else := ["reject", sprintf("%s exceeds maxFindings: %s", [concat(", ", over(answers[k(c)])), named(answers[k(c)])])] {
	answers[k(c)].status == "accepted"
	count(over(answers[k(c)])) > 0
} else := ["accept", ""] {
	answers[k(c)].status == "accepted"
} else := ["error", sprintf("the image provider answered an unknown status %v", [object.get(answers[k(c)], "status", "(none)")])]

severities := ["critical", "high", "medium", "low", "negligible", "unknown"]

# over(v): "<severity> <n> > <max>" for each severity over its maximum.
over(v) := [sprintf("%s %d > %d", [s, n, m]) |
	s := severities[_]
	m := params.maxFindings[s]
	n := counted(v, s)
	n > m
]

# counted(v, s): findings of severity s that count: the summary (fixable
# only, with ignoreUnfixed), less the listed findings it includes that are
# excused (allowed, or in their grace period). A finding the provider did
# not list cannot be shown excused, so it counts.
counted(v, s) := object.get(summary(v), s, 0) - count([f |
	f := listed(v)[_]
	f.severity == s
	not unfixed_ignored(f)
	excused(v, f)
])

listed(v) := [f | f := object.get(v, "findings", [])[_]; is_object(f)]

excused(v, f) {
	allowed(f.id)
}

excused(v, f) {
	not allowed(f.id)
	in_grace(v, f)
}

# counting(v): the listed findings that count, in the provider's order
# (most severe first), of the severities over their maximum.
counting(v) := [f |
	f := listed(v)[_]
	limited(v, f.severity)
	not unfixed_ignored(f)
	not excused(v, f)
]

limited(v, s) {
	counted(v, s) > params.maxFindings[s]
}

# named(v): the findings that break maxFindings, for the developer who has
# to fix them: the first three, then how many more (counted findings the
# provider's list left out among them).
named(v) := concat(", ", shown) {
	shown := [describe(f) | f := counting(v)[i]; i < 3]
	count(shown) > 0
	total(v) <= count(shown)
} else := sprintf("%s and %d more", [concat(", ", shown), total(v) - count(shown)]) {
	shown := [describe(f) | f := counting(v)[i]; i < 3]
	count(shown) > 0
} else := sprintf("%d the provider did not list", [total(v)])

total(v) := sum([counted(v, s) | s := severities[_]; limited(v, s)])

# describe(f): "CVE-2026-1 (critical, openssl 3.0.1, fixed in 3.0.9)".
describe(f) := sprintf("%v (%v, %v %v, %s)", [f.id, object.get(f, "severity", "unknown"), object.get(f, "package", "?"), object.get(f, "installed", "?"), fix(f)])

fix(f) := concat("", ["fixed in ", f.fixed]) {
	is_string(f.fixed)
	f.fixed != ""
} else := "no fix yet"

# grace_end(v, f): when f's grace period ends, in ns. Undefined, so f
# counts, unless grace names its severity with a duration OPA can parse, f
# carries a first-seen date, and that date is after the digest's first
# scan: a finding that was in the image when Moat first met it (a new image
# with an old CVE) gets no grace.
grace_end(v, f) := seen + d {
	d := time.parse_duration_ns(params.grace[f.severity])
	d > 0
	seen := time.parse_rfc3339_ns(f.firstSeen)
	first := time.parse_rfc3339_ns(v.firstScanned)
	seen > first
}

in_grace(v, f) {
	time.now_ns() < grace_end(v, f)
}

# grace_notes(v): the findings in their grace period that would count
# once it ends, each with its end.
grace_notes(v) := [sprintf("%s until %s", [describe(f), time.format(grace_end(v, f))]) |
	f := listed(v)[_]
	is_number(params.maxFindings[f.severity])
	not unfixed_ignored(f)
	not allowed(f.id)
	in_grace(v, f)
]

summary(v) := object.get(v, "fixable", {}) {
	params.ignoreUnfixed == true
} else := object.get(v, "vulnerabilities", {})

unfixed_ignored(f) {
	params.ignoreUnfixed == true
	object.get(f, "fixed", "") == ""
}

allowed(id) {
	a := params.allowedFindings[_]
	a.id == id
	not expired(a)
}

expired(a) {
	time.now_ns() > time.parse_rfc3339_ns(a.expires)
}

expired(a) {
	regex.match(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`, a.expires)
	time.now_ns() > time.parse_rfc3339_ns(concat("", [a.expires, "T23:59:59Z"]))
}

final(c) := [v, r] {
	decision(c)[0] != "scan"
	v := decision(c)[0]
	r := decision(c)[1]
} else := ["accept", "it runs already"] {
	running_exempt
} else := [v, r] {
	res := verdict(c)
	res[0] != "error"
	v := res[0]
	r := res[1]
} else := [setting("providerError", "reject"), verdict(c)[1]]

violation[{"msg": msg}] {
	setting("report", "violations") == "violations"
	c := pods.fresh[_]
	is_string(c.image)
	f := final(c)
	f[0] == "reject"
	msg := sprintf("container %s, image %s: denied: %s", [c.name, c.image, f[1]])
}

# With report: grace, the constraint reports the findings in their grace
# period instead (pair it, enforcementAction warn, with the enforcing one).
violation[{"msg": msg}] {
	setting("report", "violations") == "grace"
	c := scanned[_]
	notes := grace_notes(answers[k(c)])
	count(notes) > 0
	msg := sprintf("container %s, image %s: in its grace period, counts toward maxFindings when it ends: %s", [c.name, c.image, concat(", ", notes)])
}

# running_exempt: with admitRunning, at admission (never in the audit),
# every scanned image of the pod runs already, by digest, in a pod of the
# same workload in this namespace (Gatekeeper's replicated data): a restart,
# an eviction, a scale-up of what runs is not stopped by a CVE found since.
running_exempt {
	params.admitRunning == true
	admission[input.review.operation]
	count(scanned) > 0
	not some_image_new
}

admission := {"CREATE", "UPDATE"}

some_image_new {
	c := scanned[_]
	not runs(c)
}

runs(c) {
	d := answers[k(c)].digest
	is_string(d)
	running_digests[d]
}

running_digests := {d |
	p := data.inventory.namespace[review.namespace].v1.Pod[_]
	p.status.phase == "Running"
	same_workload(controller(p.metadata))
	id := p.status.containerStatuses[_].imageID
	contains(id, "@")
	parts := split(id, "@")
	d := parts[count(parts) - 1]
}

controller(meta) := o {
	o := meta.ownerReferences[_]
	o.controller == true
}

# same_workload(o): o, a running pod's controller, is the workload of the
# pod under review: the same owner for a pod; for a workload judged
# directly, its pods' owner (a Deployment's ReplicaSets, a CronJob's Jobs).
same_workload(o) {
	not pods.is_workload
	mine := controller(review.object.metadata)
	o.uid == mine.uid
}

same_workload(o) {
	review.object.kind == "Deployment"
	o.kind == "ReplicaSet"
	regex.match(sprintf("^%s-[a-z0-9]+$", [replace(review.object.metadata.name, ".", "[.]")]), o.name)
}

same_workload(o) {
	review.object.kind == "CronJob"
	o.kind == "Job"
	regex.match(sprintf("^%s-[0-9]+$", [replace(review.object.metadata.name, ".", "[.]")]), o.name)
}

same_workload(o) {
	direct_owners[review.object.kind]
	o.kind == review.object.kind
	o.name == review.object.metadata.name
}

direct_owners := {"ReplicaSet", "StatefulSet", "DaemonSet", "Job"}
