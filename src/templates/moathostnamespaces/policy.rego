package moathostnamespaces

import data.lib.moat.pods

violation[{"msg": msg}] {
	shared := [f | f := ["hostPID", "hostIPC", "hostNetwork"][_]; judged(f); pods.spec[f] == true]
	count(shared) > 0
	msg := sprintf("pods must not share the host's namespaces: %s", [concat(", ", shared)])
}

judged(f) {
	f != "hostNetwork"
}

judged("hostNetwork") {
	pods.params.includeHostNetwork == true
}
