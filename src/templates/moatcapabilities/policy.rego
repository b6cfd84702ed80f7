package moatcapabilities

import data.lib.moat.pods

allowed_list := object.get(pods.params, "allowedCapabilities", [])

allowed := {x | x := allowed_list[_]}

required := [x | x := object.get(pods.params, "requiredDropCapabilities", [])[_]]

caps(c, field) := l {
	l := c.securityContext.capabilities[field]
	is_array(l)
} else := []

adds_unlisted(c) {
	not allowed["*"]
	a := caps(c, "add")[_]
	not allowed[a]
}

misses_drop(c) {
	r := required[_]
	dropped := {d | d := caps(c, "drop")[_]}
	not dropped[r]
	not dropped.ALL
}

violation[{"msg": msg}] {
	not pods.windows_exempt
	bad := [c | c := pods.checked[_]; adds_unlisted(c)]
	count(bad) > 0
	msg := sprintf("containers add capabilities outside allowedCapabilities [%s]: %s", [concat(", ", allowed_list), pods.names(bad)])
}

violation[{"msg": msg}] {
	not pods.windows_exempt
	bad := [c | c := pods.checked[_]; misses_drop(c)]
	count(bad) > 0
	msg := sprintf("containers must drop [%s]: %s", [concat(", ", required), pods.names(bad)])
}
