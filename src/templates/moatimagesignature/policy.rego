package moatimagesignature

import data.lib.moat.external
import data.lib.moat.images
import data.lib.moat.pods

params := pods.params

setting(name, default_value) := external.setting(name, default_value)

exempt(c) {
	images.under(images.repository(c.image), params.alwaysAccept[_])
}

checked := [c | c := pods.fresh[_]; is_string(c.image); not exempt(c)]

# k(c): the key of c's image.
k(c) := external.key(c.image, pods.pod_spec)

keys := sort({k(c) | c := checked[_]})

response := external_data({"provider": setting("provider", "moat"), "keys": keys}) {
	count(keys) > 0
}

answers := external.answers(response)

signature(k) := s {
	s := answers[k].signature
	is_object(s)
} else := {}

# verdict(c): [verdict, reason]; "error" means the provider failed.
verdict(c) := ["error", external.failure(response, answers, k(c))] {
	external.failure(response, answers, k(c))
} else := ["accept", ""] {
	signature(k(c)).verified == true
} else := [setting("pendingPolicy", "reject"), "its signature is not verified yet"] {
	signature(k(c)).status == "pending"
} else := ["reject", sprintf("no valid signature: %v", [object.get(signature(k(c)), "reason", "the provider reports no signature check")])]

final(c) := [v, r] {
	res := verdict(c)
	res[0] != "error"
	v := res[0]
	r := res[1]
} else := [setting("providerError", "reject"), verdict(c)[1]]

violation[{"msg": msg}] {
	c := checked[_]
	f := final(c)
	f[0] == "reject"
	msg := sprintf("container %s, image %s: denied: %s", [c.name, c.image, f[1]])
}
