package moatsysctls

import data.lib.moat.pods

safe := ["kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
	"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"]

allowed := {s | s := object.get(pods.params, "allowedSysctls", safe)[_]}

violation[{"msg": msg}] {
	not allowed["*"]
	bad := [s.name | s := pods.spec.securityContext.sysctls[_]; not allowed[s.name]]
	count(bad) > 0
	msg := sprintf("pods must not set these sysctls: %s", [concat(", ", bad)])
}
