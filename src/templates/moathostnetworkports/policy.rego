package moathostnetworkports

import data.lib.moat.pods

violation[{"msg": "pods must not use the host network (allowHostNetwork is false)"}] {
	pods.spec.hostNetwork == true
	not pods.params.allowHostNetwork == true
}

host_ports(c) := [p | port := c.ports[_]; p := port.hostPort; is_number(p); p != 0]

in_range(p) {
	pods.params.minPort <= p
	p <= pods.params.maxPort
}

listed(p) {
	e := pods.params.allowedHostPorts[_]
	not contains(e, "-")
	to_number(e) == p
}

listed(p) {
	e := pods.params.allowedHostPorts[_]
	bounds := split(e, "-")
	count(bounds) == 2
	to_number(bounds[0]) <= p
	p <= to_number(bounds[1])
}

allowed(p) {
	in_range(p)
}

allowed(p) {
	listed(p)
}

violation[{"msg": msg}] {
	bad := [sprintf("%s (%s)", [c.name, concat(", ", [format_int(p, 10) | p := host_ports(c)[_]; not allowed(p)])]) |
		c := pods.checked[_]
		count([p | p := host_ports(c)[_]; not allowed(p)]) > 0
	]
	count(bad) > 0
	msg := sprintf("containers use host ports that are not allowed: %s", [concat(", ", bad)])
}
