package moatprivilegeescalation

import data.lib.moat.pods

violation[{"msg": msg}] {
	not pods.windows_exempt
	bad := [c | c := pods.checked[_]; not escalation_off(c)]
	count(bad) > 0
	msg := sprintf("containers must set securityContext.allowPrivilegeEscalation to false: %s", [pods.names(bad)])
}

escalation_off(c) {
	c.securityContext.allowPrivilegeEscalation == false
}
