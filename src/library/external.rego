package lib.moat.external

# Reading an external_data response from the Moat provider, shared by the
# image templates and inlined by src/gen. A template calls
# external_data itself (its keys are its own) and passes the response here.

# setting(name, default_value): a string parameter, or its default.
setting(name, default_value) := v {
	v := input.parameters[name]
	is_string(v)
} else := default_value

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
