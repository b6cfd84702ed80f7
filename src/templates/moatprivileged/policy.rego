package moatprivileged

import data.lib.moat.pods

violation[{"msg": msg}] {
	bad := [c | c := pods.checked[_]; c.securityContext.privileged == true]
	count(bad) > 0
	msg := sprintf("privileged containers are not allowed: %s", [pods.names(bad)])
}
