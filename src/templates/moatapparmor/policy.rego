package moatapparmor

import data.lib.moat.pods
import data.lib.moat.review

allowed_list := object.get(pods.params, "allowedProfiles", ["runtime/default"])

allowed(p) {
	e := allowed_list[_]
	not endswith(e, "*")
	p == e
}

allowed(p) {
	e := allowed_list[_]
	endswith(e, "*")
	startswith(p, trim_suffix(e, "*"))
}

profile(f) := "runtime/default" {
	f.type == "RuntimeDefault"
} else := concat("", ["localhost/", object.get(f, "localhostProfile", "")]) {
	f.type == "Localhost"
} else := "unconfined" {
	f.type == "Unconfined"
} else := sprintf("%v", [f.type])

annotation(c) := a {
	a := pods.pod_metadata.annotations[concat("", ["container.apparmor.security.beta.kubernetes.io/", c.name])]
	a != ""
}

pod_profile := profile(pods.spec.securityContext.appArmorProfile)

# Every profile set anywhere, with who set it.
explicit := array.concat(
	[{"who": "pod", "profile": pod_profile} | pod_profile],
	[{"who": c.name, "profile": p} | c := pods.checked[_]; p := container_profiles(c)[_]],
)

# container_profiles: the field's profile, then the annotation's; each only
# when set (an array literal with an undefined member would drop both).
container_profiles(c) := array.concat(
	[p | p := profile(c.securityContext.appArmorProfile)],
	[a | a := annotation(c)],
)

bad := [sprintf("%s (%s)", [e.who, e.profile]) | e := explicit[_]; not allowed(e.profile)]

has_profile(c) {
	c.securityContext.appArmorProfile
}

has_profile(c) {
	annotation(c)
}

has_profile(_) {
	pod_profile
}

unset := [c.name | not pods.params.allowUnset == true; c := pods.checked[_]; not has_profile(c)]

violation[{"msg": msg}] {
	count(bad) > 0
	msg := sprintf("AppArmor profiles not in allowedProfiles: %s", [concat(", ", bad)])
}

violation[{"msg": msg}] {
	count(unset) > 0
	msg := sprintf("containers without an AppArmor profile: %s", [concat(", ", unset)])
}
