package moatautomounttoken

import data.lib.moat.pods
import data.lib.moat.review

violation[{"msg": msg}] {
	review.object.kind == "Pod"
	not pods.spec.automountServiceAccountToken == false
	msg := "pods must set automountServiceAccountToken to false"
}
