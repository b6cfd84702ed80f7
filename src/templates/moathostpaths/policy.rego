package moathostpaths

import data.lib.moat.pods

entries := [e | e := object.get(pods.params, "allowedHostPaths", [])[_]]

volumes := v {
	v := pods.spec.volumes
	is_array(v)
} else := []

host_paths := {v.name: p | v := volumes[_]; p := v.hostPath.path; is_string(p)}

mounts(c) := m {
	m := c.volumeMounts
	is_array(m)
} else := []

under(path, prefix) {
	q := trim_suffix(prefix, "/")
	path == q
}

under(path, prefix) {
	q := trim_suffix(prefix, "/")
	startswith(path, concat("", [q, "/"]))
}

admitted(path, m) {
	not backstep(path)
	e := entries[_]
	under(path, e.pathPrefix)
	not writable_where_read_only(e, m)
}

backstep(path) {
	split(path, "/")[_] == ".."
}

writable_where_read_only(e, m) {
	e.readOnly == true
	not m.readOnly == true
}

violation[{"msg": msg}] {
	bad := [sprintf("%s (%s)", [c.name, concat(", ", paths)]) |
		c := pods.checked[_]
		paths := [p | m := mounts(c)[_]; p := host_paths[m.name]; not admitted(p, m)]
		count(paths) > 0
	]
	count(bad) > 0
	msg := sprintf("containers mount host paths that allowedHostPaths does not admit (or not read-only where it requires): %s", [concat(", ", bad)])
}
