package moatwindowshostprocess

import data.lib.moat.pods

setters := array.concat(
	[s | pods.spec.securityContext.windowsOptions.hostProcess == true; s := "pod"],
	[c.name | c := pods.checked[_]; c.securityContext.windowsOptions.hostProcess == true],
)

violation[{"msg": msg}] {
	count(setters) > 0
	msg := sprintf("Windows HostProcess is not allowed: %s", [concat(", ", setters)])
}
