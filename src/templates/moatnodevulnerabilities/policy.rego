package moatnodevulnerabilities

import data.lib.moat.external

params := object.get(input, "parameters", {})

setting(name, default_value) := external.setting(name, default_value)

provider := setting("provider", "moat-nodes")

node := input.review.object

name := object.get(object.get(node, "metadata", {}), "name", "")

boot := object.get(object.get(object.get(node, "status", {}), "nodeInfo", {}), "bootID", "")

key := sprintf("%s/%s", [name, boot])

# The kubelet updates its Node at every heartbeat: judging admission would
# stop it. The audit sends no operation.
admission := {"CREATE", "UPDATE", "DELETE", "CONNECT"}

audited {
	not admission[object.get(input.review, "operation", "")]
}

labels := object.get(object.get(node, "metadata", {}), "labels", {})

# pool_labels, in order: AKS, EKS managed node groups, GKE, Karpenter, kOps.
pool_labels := [
	["kubernetes.azure.com/agentpool", "az aks nodepool upgrade --node-image-only --nodepool-name %s"],
	["eks.amazonaws.com/nodegroup", "aws eks update-nodegroup-version --nodegroup-name %s"],
	["cloud.google.com/gke-nodepool", "gcloud container clusters upgrade --node-pool %s"],
	["karpenter.sh/nodepool", "update the node class's image of NodePool %s and let Karpenter replace its nodes"],
	["kops.k8s.io/instancegroup", "update the image of instance group %s and run kops rolling-update"],
]

pools := [[v, sprintf(p[1], [v])] | p := pool_labels[_]; v := object.get(labels, p[0], ""); v != ""]

where := sprintf("node pool %s (node %s)", [pools[0][0], name]) {
	count(pools) > 0
} else := sprintf("node %s (no node pool label)", [name])

remediation := sprintf("upgrade the node pool's node image (%s)", [pools[0][1]]) {
	count(pools) > 0
} else := "upgrade the node's image, or its packages, and replace the node"

response := external_data({"provider": provider, "keys": [key]})

answers := external.answers(response)

v := answers[key]

# verdict: [verdict, reason, remediate].
verdict := ["reject", "it has no status.nodeInfo.bootID: its report cannot be matched to its boot", false] {
	boot == ""
} else := ["error", external.failure(response, answers, key), false] {
	external.failure(response, answers, key)
} else := [setting("reportPending", "reject"), sprintf("it has no current scan report (report_not_available): %v", [object.get(v, "reason", "no reason given")]), false] {
	v.status == "report_not_available"
} else := [setting("scanFailed", "reject"), sprintf("its scan failed: %v", [object.get(v, "reason", "no reason given")]), false] {
	v.status == "scan_failed"
} else := ["reject", sprintf("the provider's scan policy rejected it: %v", [object.get(v, "reason", "no reason given")]), true] {
	v.status == "rejected"
} else := ["reject", sprintf("%s exceeds maxFindings: %s", [concat(", ", over), named]), true] {
	v.status == "accepted"
	count(over) > 0
} else := ["accept", "", false] {
	v.status == "accepted"
} else := ["error", sprintf("the node provider answered an unknown status %v", [object.get(v, "status", "(none)")]), false]

final := [verdict[0], verdict[1], verdict[2]] {
	verdict[0] != "error"
} else := [setting("providerError", "reject"), verdict[1], false]

severities := ["critical", "high", "medium", "low", "negligible", "unknown"]

summary := object.get(v, "fixable", {}) {
	params.ignoreUnfixed == true
} else := object.get(v, "vulnerabilities", {})

listed := [f | f := object.get(v, "findings", [])[_]; is_object(f)]

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

# counted(s): the summary's findings of severity s, less the listed ones
# allowed; one the provider did not list cannot be shown allowed, so it counts.
counted(s) := object.get(summary, s, 0) - count([f | f := listed[_]; f.severity == s; not unfixed_ignored(f); allowed(f.id)])

over := [sprintf("%s %d > %d", [s, n, m]) |
	s := severities[_]
	m := params.maxFindings[s]
	n := counted(s)
	n > m
]

limited(s) {
	counted(s) > params.maxFindings[s]
}

counting := [f | f := listed[_]; limited(f.severity); not unfixed_ignored(f); not allowed(f.id)]

total := sum([counted(s) | s := severities[_]; limited(s)])

named := concat(", ", shown) {
	shown := [describe(f) | f := counting[i]; i < 3]
	count(shown) > 0
	total <= count(shown)
} else := sprintf("%s and %d more", [concat(", ", shown), total - count(shown)]) {
	shown := [describe(f) | f := counting[i]; i < 3]
	count(shown) > 0
} else := sprintf("%d the provider did not list", [total])

describe(f) := sprintf("%v (%v, %v %v, %s)", [f.id, object.get(f, "severity", "unknown"), object.get(f, "package", "?"), object.get(f, "installed", "?"), fix(f)])

fix(f) := concat("", ["fixed in ", f.fixed]) {
	is_string(f.fixed)
	f.fixed != ""
} else := "no fix yet"

violation[{"msg": msg}] {
	audited
	final[0] == "reject"
	final[2] == true
	msg := sprintf("%s: %s; remediation: %s", [where, final[1], remediation])
}

violation[{"msg": msg}] {
	audited
	final[0] == "reject"
	final[2] == false
	msg := sprintf("%s: %s", [where, final[1]])
}
