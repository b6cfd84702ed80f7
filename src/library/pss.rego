package lib.moat.pss

# The Pod Security Standards version a constraint follows (its parameter
# version, as Pod Security Admission's enforce-version), inlined by src/gen
# into the templates with podSecurity: true. Its CEL twin is
# src/library/pss.cel.yaml.

import data.lib.moat.pods

version := v {
	v := input.parameters.version
	v != null
} else := "latest"

# minor: N of version "v1.N"; "latest", the default, is newer than any
# release; -1 when version is malformed (malformed, below).
minor := 1000000 {
	version == "latest"
} else := to_number(substring(version, 3, -1)) {
	valid_release(version)
} else := -1

# malformed: version is neither "latest" nor "v1.N" (minor is -1). A rule of
# its own so the common case, no version given, costs one lookup.
malformed {
	v := input.parameters.version
	v != null
	v != "latest"
	not valid_release(v)
}

valid_release(v) {
	is_string(v)
	regex.match(`^v1[.](0|[1-9][0-9]{0,4})$`, v)
}

# windows_exempt: the constraint exempts Windows pods (exemptWindowsPods), as
# Pod Security Admission's restricted level does from 1.25 for some controls.
windows_exempt {
	minor >= 25
	pods.params.exemptWindowsPods == true
	pods.spec.os.name == "windows"
}
