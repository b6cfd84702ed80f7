package moatreadonlyrootfilesystem

import data.lib.moat.pods

violation[{"msg": msg}] {
	bad := [c | c := pods.checked[_]; not read_only(c)]
	count(bad) > 0
	msg := sprintf("containers must set securityContext.readOnlyRootFilesystem to true: %s", [pods.names(bad)])
}

read_only(c) {
	c.securityContext.readOnlyRootFilesystem == true
}
