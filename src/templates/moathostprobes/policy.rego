package moathostprobes

import data.lib.moat.pods
import data.lib.moat.pss

handlers(c) := array.concat(
	[h | p := ["livenessProbe", "readinessProbe", "startupProbe"][_]; h := c[p]],
	[h | p := ["postStart", "preStop"][_]; h := c.lifecycle[p]],
)

sets_host(c) {
	h := handlers(c)[_]
	k := ["httpGet", "tcpSocket"][_]
	object.get(object.get(h, k, {}), "host", "") != ""
}

violation[{"msg": msg}] {
	pss.minor >= 34
	bad := [c | c := pods.checked[_]; sets_host(c)]
	count(bad) > 0
	msg := sprintf("probes and lifecycle handlers must not set host: %s", [pods.names(bad)])
}
