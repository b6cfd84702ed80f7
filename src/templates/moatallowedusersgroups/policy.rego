package moatallowedusersgroups

import data.lib.moat.pods
import data.lib.moat.pss

rule(name) := object.get(pods.params, name, "RunAsAny")

in_ranges(v, name) {
	r := pods.params[name].ranges[_]
	r.min <= v
	r.max == -1
}

in_ranges(v, name) {
	r := pods.params[name].ranges[_]
	r.min <= v
	v <= r.max
}

psc := s {
	s := pods.spec.securityContext
	is_object(s)
} else := {}

# eff(c, f): the container's setting, else the pod's.
eff(c, f) := v {
	v := c.securityContext[f]
	v != null
} else := v {
	v := psc[f]
	v != null
}

user_bad(c) {
	rule("runAsUserRule") == "MustRunAs"
	not user_in_range(c)
}

user_bad(c) {
	rule("runAsUserRule") == "MustRunAsNonRoot"
	eff(c, "runAsUser") == 0
}

user_bad(c) {
	rule("runAsUserRule") == "MustRunAsNonRoot"
	not eff(c, "runAsUser")
	not non_root(c)
}

# Helpers keep function calls out of "not f(x.y)": OPA evaluates the
# argument outside the negation, so an undefined one would end the rule.
non_root(c) {
	eff(c, "runAsNonRoot") == true
}

user_in_range(c) {
	in_ranges(eff(c, "runAsUser"), "runAsUserRanges")
}

group_bad(c) {
	rule("runAsGroupRule") == "MustRunAs"
	not group_in_range(c)
}

group_in_range(c) {
	in_ranges(eff(c, "runAsGroup"), "runAsGroupRanges")
}

group_bad(c) {
	rule("runAsGroupRule") == "MayRunAs"
	g := eff(c, "runAsGroup")
	not in_ranges(g, "runAsGroupRanges")
}

violation[{"msg": msg}] {
	bad := [c | c := pods.checked[_]; user_bad(c)]
	count(bad) > 0
	msg := sprintf("containers break runAsUserRule %s: %s", [rule("runAsUserRule"), pods.names(bad)])
}

violation[{"msg": msg}] {
	bad := [c | c := pods.checked[_]; group_bad(c)]
	count(bad) > 0
	msg := sprintf("containers break runAsGroupRule %s: %s", [rule("runAsGroupRule"), pods.names(bad)])
}

fs_group_in_range {
	in_ranges(psc.fsGroup, "fsGroupRanges")
}

violation[{"msg": msg}] {
	rule("fsGroupRule") == "MustRunAs"
	not fs_group_in_range
	msg := "fsGroup breaks fsGroupRule MustRunAs"
}

violation[{"msg": msg}] {
	rule("fsGroupRule") == "MayRunAs"
	psc.fsGroup != null
	not fs_group_in_range
	msg := "fsGroup breaks fsGroupRule MayRunAs"
}

supplemental := g {
	g := psc.supplementalGroups
	is_array(g)
} else := []

violation[{"msg": msg}] {
	rule("supplementalGroupsRule") == "MustRunAs"
	not supplemental_ok(true)
	msg := "supplementalGroups break supplementalGroupsRule MustRunAs"
}

violation[{"msg": msg}] {
	rule("supplementalGroupsRule") == "MayRunAs"
	not supplemental_ok(false)
	msg := "supplementalGroups break supplementalGroupsRule MayRunAs"
}

supplemental_ok(required) {
	not required == true
	count(supplemental) == 0
}

supplemental_ok(_) {
	count(supplemental) > 0
	every_in := [g | g := supplemental[_]; not in_ranges(g, "supplementalGroupsRanges")]
	count(every_in) == 0
}

# The Pod Security Standards' rule, as Pod Security Admission applies it.
pss_applies {
	pods.params.requireRunAsNonRoot == true
	not relaxed
}

relaxed {
	pss.minor >= 35
	pods.params.relaxForUserNamespaces == true
	pods.spec.hostUsers == false
}

pss_setters := array.concat(
	[s | psc.runAsNonRoot == false; s := "pod"],
	array.concat(
		[s | pss.minor >= 23; psc.runAsUser == 0; s := "pod"],
		[c.name | c := pods.checked[_]; pss_container_bad(c)],
	),
)

pss_container_bad(c) {
	c.securityContext.runAsNonRoot == false
}

pss_container_bad(c) {
	pss.minor >= 23
	c.securityContext.runAsUser == 0
}

pss_container_bad(c) {
	not c.securityContext.runAsNonRoot == false
	not c.securityContext.runAsNonRoot == true
	not psc.runAsNonRoot == true
}

violation[{"msg": msg}] {
	pss_applies
	count(pss_setters) > 0
	msg := sprintf("runAsNonRoot must be true and runAsUser must not be 0: %s", [concat(", ", pss_setters)])
}
