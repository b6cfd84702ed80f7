package moatsysctls

import data.lib.moat.pods
import data.lib.moat.pss

# The Pod Security Standards safe set, each sysctl with the minor version that added it.
safe_since := {
	"kernel.shm_rmid_forced": 0, "net.ipv4.ip_local_port_range": 0, "net.ipv4.ip_unprivileged_port_start": 0,
	"net.ipv4.tcp_syncookies": 0, "net.ipv4.ping_group_range": 0, "net.ipv4.ip_local_reserved_ports": 27,
	"net.ipv4.tcp_keepalive_time": 29, "net.ipv4.tcp_fin_timeout": 29, "net.ipv4.tcp_keepalive_intvl": 29,
	"net.ipv4.tcp_keepalive_probes": 29, "net.ipv4.tcp_rmem": 32, "net.ipv4.tcp_wmem": 32,
	"net.ipv4.tcp_slow_start_after_idle": 37, "net.ipv4.tcp_notsent_lowat": 37,
}

safe := [s | m := safe_since[s]; m <= pss.minor]

allowed := {s | s := object.get(pods.params, "allowedSysctls", safe)[_]}

violation[{"msg": msg}] {
	not allowed["*"]
	bad := [s.name | s := pods.spec.securityContext.sysctls[_]; not allowed[s.name]]
	count(bad) > 0
	msg := sprintf("pods must not set these sysctls: %s", [concat(", ", bad)])
}
