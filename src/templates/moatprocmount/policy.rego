package moatprocmount

import data.lib.moat.pods
import data.lib.moat.pss

violation[{"msg": msg}] {
	not relaxed
	bad := [c | c := pods.checked[_]; c.securityContext.procMount != "Default"]
	count(bad) > 0
	msg := sprintf("containers must not set securityContext.procMount other than Default: %s", [pods.names(bad)])
}

relaxed {
	pss.minor >= 35
	pods.params.relaxForUserNamespaces == true
	pods.spec.hostUsers == false
}
