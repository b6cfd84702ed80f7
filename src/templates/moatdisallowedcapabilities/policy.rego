package moatdisallowedcapabilities

import data.lib.moat.pods

disallowed_list := [norm(x) | x := object.get(pods.params, "disallowedCapabilities", ["SYS_ADMIN"])[_]]

disallowed := {x | x := disallowed_list[_]}

norm(x) := trim_prefix(upper(x), "CAP_")

added(c) := a {
	a := c.securityContext.capabilities.add
	is_array(a)
} else := []

offends(c) {
	a := norm(added(c)[_])
	a == "ALL"
}

offends(c) {
	count(added(c)) > 0
	disallowed["ALL"]
}

offends(c) {
	disallowed[norm(added(c)[_])]
}

violation[{"msg": msg}] {
	bad := [c | c := pods.checked[_]; offends(c)]
	count(bad) > 0
	msg := sprintf("containers add a disallowed capability (%s; ALL counts as every one): %s", [concat(", ", disallowed_list), pods.names(bad)])
}
