package lib.moat.external

# Reading an external_data response from the Moat provider, shared by the
# image templates and inlined by src/gen. A template calls
# external_data itself (its keys are its own) and passes the response here.

# setting(name, default_value): a string parameter, or its default.
setting(name, default_value) := v {
	v := input.parameters[name]
	is_string(v)
} else := default_value

# key(image, spec): what the provider is asked about image. With the
# parameter credentials "namespace", a namespaced key
# (docs/protocol.md#namespaced-keys): the provider then pulls with the pod's
# namespace's Secrets (spec.imagePullSecrets, then those of
# spec.serviceAccountName) before the cluster-wide credentials, and never
# with another namespace's.
key(image, spec) := image {
	setting("credentials", "cluster") == "cluster"
} else := sprintf("moat.ns.v1:%s/%s/%s:%s", [review_namespace, account(spec), concat(",", pull_secrets(spec)), image])

review_namespace := ns {
	ns := input.review.namespace
	is_string(ns)
	ns != ""
} else := ns {
	ns := input.review.object.metadata.namespace
	is_string(ns)
	ns != ""
} else := "default"

account(spec) := a {
	a := spec.serviceAccountName
	is_string(a)
	a != ""
} else := "default"

pull_secrets(spec) := [n | n := object.get(spec, "imagePullSecrets", [])[_].name; is_string(n); n != ""]

# answers(resp): key -> value, for the keys the provider answered.
answers(resp) := {r[0]: r[1] | r := object.get(resp, "responses", [])[_]; is_string(r[0])}

# errors(resp): key -> error, for the keys the provider could not answer.
errors(resp) := {e[0]: e[1] | e := object.get(resp, "errors", [])[_]; is_string(e[0])}

# failure(resp, answered, k): why there is no usable answer for k, or
# undefined when there is one. answered is answers(resp), computed once by
# the caller. A helper rather than "not is_object(answered[k])": OPA
# evaluates a call's arguments outside a negation, so an unanswered key
# would end the rule (fail open) instead of being reported.
failure(resp, answered, k) := sprintf("the image provider failed: %s", [resp.system_error]) {
	resp.system_error != ""
} else := sprintf("the image provider answered: %s", [errors(resp)[k]]) {
	errors(resp)[k]
} else := "the image provider gave no answer" {
	not has_answer(answered, k)
}

has_answer(answered, k) {
	is_object(answered[k])
}
