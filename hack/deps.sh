#!/usr/bin/env bash
# The Debian packages the tests need, pinned, installed when missing:
# redis-server for the shared-tier tests (provider/internal/shared, the
# replicas' tests of provider/cmd/moat, test/e2e).
set -euo pipefail

redis_version=7.0.15 # Debian 12's redis-server 5:7.0.15-1~deb12u*

if redis-server --version 2>/dev/null | grep -q "v=${redis_version} "; then
	exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo=sudo
fi
$sudo apt-get update -qq
# The package's service is not started: the tests start their own servers.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "redis-server=5:${redis_version}-*"
redis-server --version
