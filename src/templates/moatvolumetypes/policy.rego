package moatvolumetypes

import data.lib.moat.pods

allowed := {t | t := object.get(pods.params, "allowedVolumeTypes", ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret"])[_]}

disallowed := {t | t := object.get(pods.params, "disallowedVolumeTypes", [])[_]}

bad_type(t) {
	disallowed[t]
}

bad_type(t) {
	not allowed["*"]
	not allowed[t]
}

violation[{"msg": msg}] {
	bad := [sprintf("%s (%s)", [v.name, t]) | v := pods.spec.volumes[_]; t := [k | v[k]; k != "name"][_]; bad_type(t)]
	count(bad) > 0
	msg := sprintf("volumes of types that are not allowed: %s", [concat(", ", bad)])
}
