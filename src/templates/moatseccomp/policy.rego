package moatseccomp

import data.lib.moat.pods
import data.lib.moat.pss

allowed := {p | p := object.get(pods.params, "allowedProfiles", ["RuntimeDefault", "Localhost"])[_]}

# The seccompProfile fields, which the Pod Security Standards judge since 1.19.
fields_judged {
	pss.minor >= 19
}

pod_type := t {
	t := pods.spec.securityContext.seccompProfile.type
}

explicit := array.concat(
	[s | fields_judged; not allowed[pod_type]; s := "pod"],
	[c.name | fields_judged; c := pods.checked[_]; t := c.securityContext.seccompProfile.type; not allowed[t]],
)

pod_has_profile {
	allowed[pod_type]
}

missing := [c.name |
	fields_judged
	pods.params.requireProfile == true
	not pod_has_profile
	c := pods.checked[_]
	not c.securityContext.seccompProfile.type
]

# Before 1.19 the standards judged the alpha annotations instead, each read as
# the profile type it names (anything but runtime/default, docker/default and
# localhost/… as Unconfined).
annotations := object.get(pods.pod_metadata, "annotations", {})

annotation_type(v) := "RuntimeDefault" {
	v == "runtime/default"
} else := "RuntimeDefault" {
	v == "docker/default"
} else := "Localhost" {
	startswith(v, "localhost/")
} else := "Unconfined"

annotation_keys := array.concat(
	["seccomp.security.alpha.kubernetes.io/pod"],
	[concat("", ["container.seccomp.security.alpha.kubernetes.io/", c.name]) | c := pods.checked[_]],
)

annotations_bad := [k |
	not fields_judged
	k := annotation_keys[_]
	v := annotations[k]
	not allowed[annotation_type(v)]
]

violation[{"msg": msg}] {
	not pss.windows_exempt
	count(explicit) > 0
	msg := sprintf("seccompProfile.type must be one of the allowed profiles: %s", [concat(", ", explicit)])
}

violation[{"msg": msg}] {
	not pss.windows_exempt
	count(missing) > 0
	msg := sprintf("pod or containers must set a seccomp profile: %s", [concat(", ", missing)])
}

violation[{"msg": msg}] {
	not pss.windows_exempt
	count(annotations_bad) > 0
	msg := sprintf("seccomp annotations must name one of the allowed profiles: %s", [concat(", ", annotations_bad)])
}
