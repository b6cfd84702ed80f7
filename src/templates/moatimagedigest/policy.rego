package moatimagedigest

import data.lib.moat.external
import data.lib.moat.pods

provider := external.setting("provider", "moat")

reject_on_error {
	not pods.params.providerError == "accept"
}

# The image split at "@": [reference, digest], or just [reference].
parts(c) := split(c.image, "@")

unpinned := [c.name | c := pods.fresh[_]; is_string(c.image); count(parts(c)) < 2]

violation[{"msg": msg}] {
	count(unpinned) > 0
	msg := sprintf("images must be pinned by digest (image@sha256:...): %s", [concat(", ", unpinned)])
}

# Pinned images that name a tag too: ask the provider what the tag is now.
tagged := [[c.name, p[0], p[1]] | c := pods.fresh[_]; is_string(c.image); p := parts(c); count(p) == 2; has_tag(p[0])]

has_tag(ref) {
	i := max(indexof_n(ref, ":"))
	i > max(array.concat([-1], indexof_n(ref, "/")))
}

# k(ref): the key of the tag ref.
k(ref) := external.key(ref, pods.pod_spec)

keys := sort({k(t[1]) | t := tagged[_]})

response := external_data({"provider": provider, "keys": keys}) {
	pods.params.requireCurrentDigest == true
	count(keys) > 0
}

answers := external.answers(response)

errors := external.errors(response)

violation[{"msg": msg}] {
	reject_on_error
	response.system_error != ""
	msg := sprintf("image provider %s failed: %s", [provider, response.system_error])
}

stale := [sprintf("%s (pinned %s, %s is %s now)", [t[0], t[2], t[1], answers[k(t[1])].digest]) |
	t := tagged[_]
	is_string(answers[k(t[1])].digest)
	answers[k(t[1])].digest != t[2]
]

violation[{"msg": msg}] {
	count(stale) > 0
	msg := sprintf("images are pinned to a digest their tag no longer points at: %s", [concat(", ", stale)])
}

unanswered := [sprintf("%s (%s)", [t[0], reason(k(t[1]))]) |
	reject_on_error
	object.get(response, "system_error", "") == ""
	t := tagged[_]
	not answered(k(t[1]))
]

# A helper, not "not is_string(answers[k].digest)": OPA evaluates a call's
# arguments outside the negation, so an unanswered key would end the rule
# (fail open) instead of being reported.
answered(k) {
	is_string(answers[k].digest)
}

reason(k) := errors[k]

reason(k) := "no answer" {
	not errors[k]
}

violation[{"msg": msg}] {
	pods.params.requireCurrentDigest == true
	count(unanswered) > 0
	msg := sprintf("the provider could not say what these tags point at: %s", [concat(", ", unanswered)])
}
