package moatprocmount

import data.lib.moat.pods

violation[{"msg": msg}] {
	not relaxed
	bad := [c | c := pods.checked[_]; c.securityContext.procMount != "Default"]
	count(bad) > 0
	msg := sprintf("containers must not set securityContext.procMount other than Default: %s", [pods.names(bad)])
}

relaxed {
	pods.params.relaxForUserNamespaces == true
	pods.spec.hostUsers == false
}
