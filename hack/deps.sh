#!/usr/bin/env bash
# The Debian packages the tests need, pinned, installed when missing:
# - redis-server for the shared-tier tests (provider/internal/shared, the
#   replicas' tests of provider/cmd/moat, test/e2e), and as the image of the
#   chart's bundled shared tier in test/node;
# - runc, the CNI plugins, iptables, conntrack and iproute2 for the node of
#   test/node (containerd, kubelet and kube-proxy are built from Go modules).
set -euo pipefail

# package=version, as `dpkg-query -W` prints them (Debian 12); a trailing *
# takes Debian 12's security updates of that version (apt accepts the same
# pattern).
packages=(
	"redis-server=5:7.0.15-1~deb12u*"
	"runc=1.1.5+ds1-1+deb12u*"
	"containernetworking-plugins=1.1.1+ds1-3+b5"
	"iptables=1.8.9-2"
	"conntrack=1:1.4.7-1+b2"
	"iproute2=6.1.0-3"
	# The CA bundle the node test's images carry, as a distroless base does.
	"ca-certificates=20230311+deb12u*"
)

missing=()
for p in "${packages[@]}"; do
	name=${p%%=*}
	want=${p#*=}
	have=$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)
	# shellcheck disable=SC2053 # $want is a pattern
	if [[ $have != $want ]]; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo=sudo
fi
$sudo apt-get update -qq
# The packages' services are not started: the tests start their own servers.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
