package moattrustedregistries

import data.lib.moat.images
import data.lib.moat.pods

registries := [r | r := object.get(pods.params, "allowedRegistries", [])[_]]

trusted(c) {
	images.under(images.repository(c.image), registries[_])
}

trusted(c) {
	re := pods.params.allowedContainerImagesRegex
	regex.match(concat("", ["^(?:", re, ")$"]), c.image)
}

trusted(c) {
	re := pods.params.allowedContainerImagesRegex
	regex.match(concat("", ["^(?:", re, ")$"]), images.repository(c.image))
}

violation[{"msg": msg}] {
	bad := [sprintf("%s (%s)", [c.name, images.repository(c.image)]) | c := pods.checked[_]; is_string(c.image); not trusted(c)]
	count(bad) > 0
	msg := sprintf("images not from a trusted registry: %s", [concat(", ", bad)])
}
