package moatselinux

import data.lib.moat.pods
import data.lib.moat.pss

pss_types := array.concat(["", "container_t", "container_init_t", "container_kvm_t"], [t | pss.minor >= 31; t := "container_engine_t"])

allowed := {t | t := object.get(pods.params, "allowedTypes", pss_types)[_]}

bad_options(o) {
	not allowed[object.get(o, "type", "")]
}

bad_options(o) {
	object.get(o, "user", "") != ""
}

bad_options(o) {
	object.get(o, "role", "") != ""
}

setters := array.concat(
	[s | o := pods.spec.securityContext.seLinuxOptions; is_object(o); bad_options(o); s := "pod"],
	[c.name | c := pods.checked[_]; o := c.securityContext.seLinuxOptions; is_object(o); bad_options(o)],
)

violation[{"msg": msg}] {
	count(setters) > 0
	msg := sprintf("seLinuxOptions may set only an allowed type, and no user or role: %s", [concat(", ", setters)])
}
