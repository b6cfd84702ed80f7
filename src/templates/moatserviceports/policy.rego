package moatserviceports

import data.lib.moat.review

allowed := {p | p := object.get(review.params, "allowedServicePortsList", [])[_]}

violation[{"msg": msg}] {
	review.object.kind == "Service"
	bad := [format_int(p.port, 10) | p := review.object.spec.ports[_]; not allowed[format_int(p.port, 10)]]
	count(bad) > 0
	msg := sprintf("Service ports not in allowedServicePortsList: %s", [concat(", ", bad)])
}
