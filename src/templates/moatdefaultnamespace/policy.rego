package moatdefaultnamespace

import data.lib.moat.review

violation[{"msg": msg}] {
	# An object's namespace never changes: an UPDATE places nothing there.
	not input.review.operation == "UPDATE"
	review.namespace == "default"
	msg := sprintf("%v objects must not be placed in the default namespace", [review.object.kind])
}
