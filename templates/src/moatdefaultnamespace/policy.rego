package moatdefaultnamespace

import data.lib.moat.review

violation[{"msg": msg}] {
	review.namespace == "default"
	msg := sprintf("%v objects must not be placed in the default namespace", [review.object.kind])
}
