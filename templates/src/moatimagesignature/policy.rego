package moatimagesignature

import data.lib.moat.images
import data.lib.moat.pods

params := pods.params

setting(name, default_value) := v {
	v := params[name]
	is_string(v)
} else := default_value

exempt(c) {
	images.under(images.repository(c.image), params.alwaysAccept[_])
}

checked := [c | c := pods.checked[_]; is_string(c.image); not exempt(c)]

keys := sort({c.image | c := checked[_]})

response := external_data({"provider": setting("provider", "moat"), "keys": keys}) {
	count(keys) > 0
}

answers := {r[0]: r[1] | r := object.get(response, "responses", [])[_]; is_string(r[0])}

errors := {e[0]: e[1] | e := object.get(response, "errors", [])[_]; is_string(e[0])}

system_error := s {
	s := response.system_error
	s != ""
}

# A helper, not "not is_object(answers[k])": OPA evaluates a call's
# arguments outside the negation (an unanswered key would end the rule).
answered(k) {
	is_object(answers[k])
}

signature(k) := s {
	s := answers[k].signature
	is_object(s)
} else := {}

# verdict(c): [verdict, reason]; "error" means the provider failed.
verdict(c) := ["error", sprintf("the image provider failed: %s", [system_error])] {
	system_error
} else := ["error", sprintf("the image provider answered: %s", [errors[c.image]])] {
	errors[c.image]
} else := ["error", "the image provider gave no answer"] {
	not answered(c.image)
} else := ["accept", ""] {
	signature(c.image).verified == true
} else := [setting("pendingPolicy", "reject"), "its signature is not verified yet"] {
	signature(c.image).status == "pending"
} else := ["reject", sprintf("no valid signature: %v", [object.get(signature(c.image), "reason", "the provider reports no signature check")])]

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
