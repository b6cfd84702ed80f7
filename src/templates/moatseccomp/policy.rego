package moatseccomp

import data.lib.moat.pods

allowed := {p | p := object.get(pods.params, "allowedProfiles", ["RuntimeDefault", "Localhost"])[_]}

pod_type := t {
	t := pods.spec.securityContext.seccompProfile.type
}

explicit := array.concat(
	[s | not allowed[pod_type]; s := "pod"],
	[c.name | c := pods.checked[_]; t := c.securityContext.seccompProfile.type; not allowed[t]],
)

pod_has_profile {
	allowed[pod_type]
}

missing := [c.name |
	pods.params.requireProfile == true
	not pod_has_profile
	c := pods.checked[_]
	not c.securityContext.seccompProfile.type
]

violation[{"msg": msg}] {
	not pods.windows_exempt
	count(explicit) > 0
	msg := sprintf("seccompProfile.type must be one of the allowed profiles: %s", [concat(", ", explicit)])
}

violation[{"msg": msg}] {
	not pods.windows_exempt
	count(missing) > 0
	msg := sprintf("pod or containers must set a seccomp profile: %s", [concat(", ", missing)])
}
