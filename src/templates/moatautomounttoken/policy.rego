package moatautomounttoken

import data.lib.moat.pods
import data.lib.moat.review

violation[{"msg": msg}] {
	pod_or_workload
	not pods.spec.automountServiceAccountToken == false
	msg := "pods must set automountServiceAccountToken to false"
}

pod_or_workload {
	review.object.kind == "Pod"
}

pod_or_workload {
	pods.is_workload
}
