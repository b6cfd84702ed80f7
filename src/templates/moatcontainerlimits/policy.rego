package moatcontainerlimits

import data.lib.moat.pods
import data.lib.moat.quantity

maximum := {"cpu": sprintf("%v", [object.get(pods.params, "cpuLimit", "")]), "memory": sprintf("%v", [object.get(pods.params, "memoryLimit", "")])}

param_name := {"cpu": "cpuLimit", "memory": "memoryLimit"}

problem(c, r) := sprintf("%s limit missing", [r]) {
	not has_limit(c, r)
} else := sprintf("%s limit %v is not a quantity", [r, c.resources.limits[r]]) {
	not quantity.parse(c.resources.limits[r])
} else := sprintf("%s %v is not a quantity", [param_name[r], maximum[r]]) {
	maximum[r] != ""
	not quantity.parse(maximum[r])
} else := sprintf("%s limit %v is above %v", [r, c.resources.limits[r], maximum[r]]) {
	maximum[r] != ""
	quantity.parse(c.resources.limits[r]) > quantity.parse(maximum[r])
} else := ""

has_limit(c, r) {
	c.resources.limits[r] != null
}

# Ephemeral containers cannot set resources (the API server refuses the
# field), so they are not judged: kubectl debug would always be denied.
ephemeral_names := {c.name | c := pods.list(pods.pod_spec, "ephemeralContainers")[_]}

# Limits are mutable (pods/resize), which Pod Security Admission does not
# look at: an update that changes any container's resources is judged too.
resized {
	pods.is_update
	name := ["containers", "initContainers"][_]
	resources(pods.pod_spec, name) != resources(pods.old_pod_spec, name)
}

resources(s, name) := [object.get(c, "resources", {}) | c := pods.list(s, name)[_]]

judged {
	pods.judged
}

judged {
	resized
}

limited := [c | judged; c := pods.all_checked[_]; not ephemeral_names[c.name]]

violation[{"msg": msg}] {
	bad := [sprintf("%s (%s)", [c.name, concat("; ", problems)]) |
		c := limited[_]
		problems := [p | r := ["cpu", "memory"][_]; p := problem(c, r); p != ""]
		count(problems) > 0
	]
	count(bad) > 0
	msg := sprintf("containers need CPU and memory limits within the maximum: %s", [concat(", ", bad)])
}
