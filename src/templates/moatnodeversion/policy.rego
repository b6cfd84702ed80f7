package moatnodeversion

import data.lib.moat.review

node {
	review.object.kind == "Node"
}

info := i {
	i := review.object.status.nodeInfo
	is_object(i)
} else := {}

triple(v) := [to_number(p[0]), to_number(p[1]), to_number(p[2])] {
	p := split(regex.find_n(`[0-9]+\.[0-9]+\.[0-9]+`, sprintf("%v", [v]), 1)[0], ".")
}

older(a, b) {
	a[0] < b[0]
}

older(a, b) {
	a[0] == b[0]
	a[1] < b[1]
}

older(a, b) {
	a[0] == b[0]
	a[1] == b[1]
	a[2] < b[2]
}

kubelet := object.get(info, "kubeletVersion", "")

readable {
	triple(kubelet)
}

too_old {
	older(triple(kubelet), triple(review.params.minKubeletVersion))
}

violation[{"msg": msg}] {
	node
	review.params.minKubeletVersion
	not readable
	msg := sprintf("node kubelet version %q cannot be read", [kubelet])
}

violation[{"msg": msg}] {
	node
	too_old
	msg := sprintf("node kubelet %s is older than %s", [kubelet, review.params.minKubeletVersion])
}

image_allowed {
	re := review.params.allowedOSImages[_]
	regex.match(concat("", ["^(?:", re, ")$"]), object.get(info, "osImage", ""))
}

violation[{"msg": msg}] {
	node
	review.params.allowedOSImages
	not image_allowed
	msg := sprintf("node OS image %q matches no allowed pattern", [object.get(info, "osImage", "")])
}
