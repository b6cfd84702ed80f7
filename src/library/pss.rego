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
# release; -1 when version is malformed, which src/gen makes a violation.
minor := 1000000 {
	version == "latest"
} else := to_number(substring(version, 3, -1)) {
	is_string(version)
	regex.match(`^v1[.](0|[1-9][0-9]{0,4})$`, version)
} else := -1

# windows_exempt: the constraint exempts Windows pods (exemptWindowsPods), as
# Pod Security Admission's restricted level does from 1.25 for some controls.
windows_exempt {
	minor >= 25
	pods.params.exemptWindowsPods == true
	pods.spec.os.name == "windows"
}
