package moatimagescan

import data.lib.moat.external
import data.lib.moat.images
import data.lib.moat.pods

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
} else := ["reject", sprintf("%s exceeds maxFindings", [concat(", ", over(answers[k(c)]))])] {
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
# only, with ignoreUnfixed), less the allowed findings it includes.
counted(v, s) := object.get(summary(v), s, 0) - count([f |
	f := object.get(v, "findings", [])[_]
	f.severity == s
	allowed(f.id)
	not unfixed_ignored(f)
])

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
} else := [v, r] {
	res := verdict(c)
	res[0] != "error"
	v := res[0]
	r := res[1]
} else := [setting("providerError", "reject"), verdict(c)[1]]

violation[{"msg": msg}] {
	c := pods.fresh[_]
	is_string(c.image)
	f := final(c)
	f[0] == "reject"
	msg := sprintf("container %s, image %s: denied: %s", [c.name, c.image, f[1]])
}
