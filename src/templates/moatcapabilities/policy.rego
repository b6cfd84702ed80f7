package moatcapabilities

import data.lib.moat.pods
import data.lib.moat.pss

# requiredDropCapabilities is the restricted level's rule, which the Pod Security
# Standards have since 1.22; before it, that level judged capabilities by the baseline set.
baseline_before_122 {
	pss.minor < 22
	count(object.get(pods.params, "requiredDropCapabilities", [])) > 0
}

allowed_list := ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"] {
	baseline_before_122
} else := object.get(pods.params, "allowedCapabilities", [])

allowed := {x | x := allowed_list[_]}

required := [x | pss.minor >= 22; x := object.get(pods.params, "requiredDropCapabilities", [])[_]]

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
	not pss.windows_exempt
	bad := [c | c := pods.checked[_]; adds_unlisted(c)]
	count(bad) > 0
	msg := sprintf("containers add capabilities outside allowedCapabilities [%s]: %s", [concat(", ", allowed_list), pods.names(bad)])
}

violation[{"msg": msg}] {
	not pss.windows_exempt
	bad := [c | c := pods.checked[_]; misses_drop(c)]
	count(bad) > 0
	msg := sprintf("containers must drop [%s]: %s", [concat(", ", required), pods.names(bad)])
}
