package lib.moat.pods

# Shared by every Moat pod template and inlined into it by templates/gen.
# Its CEL twin is library/pods.cel.yaml: the two must select the same
# containers in the same order.

import data.lib.moat.review

params := review.params

# spec is the pod spec under review; empty on DELETE.
spec := s {
	s := review.object.spec
	is_object(s)
} else := {}

container_list(name) := l {
	l := spec[name]
	is_array(l)
} else := []

# containers is every container of the pod, in the order containers,
# initContainers, ephemeralContainers. Ephemeral containers count: kubectl
# debug adds them with an UPDATE of pods/ephemeralcontainers.
containers := array.concat(array.concat(container_list("containers"), container_list("initContainers")), container_list("ephemeralContainers"))

# checked is containers less those excluded by excludedContainers (names)
# and excludedImages (exact, or a prefix when the entry ends in "*").
checked := [c | c := containers[_]; not excluded(c)]

excluded(c) {
	c.name == params.excludedContainers[_]
}

excluded(c) {
	e := params.excludedImages[_]
	not endswith(e, "*")
	c.image == e
}

excluded(c) {
	e := params.excludedImages[_]
	endswith(e, "*")
	startswith(c.image, trim_suffix(e, "*"))
}

# windows_exempt: the constraint exempts Windows pods (exemptWindowsPods),
# as Pod Security Admission's restricted level does for some controls.
windows_exempt {
	params.exemptWindowsPods == true
	spec.os.name == "windows"
}

# names joins the names of containers cs for a message.
names(cs) := concat(", ", [n | n := cs[_].name])
