package moatprivilegeescalation

import data.lib.moat.pods
import data.lib.moat.pss

violation[{"msg": msg}] {
	pss.minor >= 8
	not pss.windows_exempt
	bad := [c | c := pods.checked[_]; not escalation_off(c)]
	count(bad) > 0
	msg := sprintf("containers must set securityContext.allowPrivilegeEscalation to false: %s", [pods.names(bad)])
}

escalation_off(c) {
	c.securityContext.allowPrivilegeEscalation == false
}
