#!/usr/bin/env bash
# `make run`: Moat's main job on one machine, offline. It writes development
# certificates, starts an in-memory OCI registry with sample images, starts
# `moat serve` with mutual TLS and the embedded scanner (Grype, with a small
# sample database), and asks it about those images.
# MOAT_RUN_ONCE=1 stops everything after the lookups (used by `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

moat=bin/moat
dir=.run
reg_port=${MOAT_REGISTRY_PORT:-5001}
port=${MOAT_PORT:-8443}
metrics_port=${MOAT_METRICS_PORT:-8080}
reg=127.0.0.1:$reg_port
mkdir -p "$dir"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local until=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > until)); then echo "run: $what did not come up; its log:" >&2; tail -20 "$dir"/*.log >&2; exit 1; fi
    sleep 0.1
  done
}

echo "== 1. development certificates"
$moat dev-certs --out "$dir/certs" --validity 24h

echo "== 2. a local OCI registry with sample images (in memory, plain HTTP on loopback)"
$moat dev-registry --addr "$reg" >"$dir/registry.log" 2>&1 &
pids+=($!)
wait_for 30 "the registry" grep -q multiarch "$dir/registry.log"
cat "$dir/registry.log"

echo "== 3. a sample vulnerability database (made-up advisories for the sample images)"
$moat dev-vulndb --out "$dir/vulnerability.db"

echo "== 4. moat serve (TLS 1.3, client certificate required; Grype embedded)"
$moat serve --addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$metrics_port" \
  --tls-cert "$dir/certs/tls.crt" --tls-key "$dir/certs/tls.key" --client-ca "$dir/certs/ca.crt" \
  --insecure-registries "$reg" --log-format text \
  --scanner embedded --db-path "$dir/vulnerability.db" --db-dir "$dir/vulndb" --scan-max critical=0 \
  --scan-grace critical=72h --db-update-interval 1s \
  >"$dir/serve.log" 2>&1 &
pids+=($!)
wait_for 30 "moat serve" grep -q "msg=serving" "$dir/serve.log"

lookup() { $moat lookup --certs "$dir/certs" "$@"; }
url=https://localhost:$port

echo "== 5. /validate: what each tag points at now (and a per-key error for each bad key)"
set +e
lookup --url "$url/validate" "$reg/demo/app:v1" "$reg/demo/nginx:1.27" "$reg/demo/multiarch:1.0" \
  "$reg/demo/app:missing" "Not A Reference"
code=$?
set -e
[ "$code" -eq 3 ] || { echo "run: expected exit code 3 (some keys failed), got $code" >&2; exit 1; }

echo "== 6. scan status: the first answer is report_not_available (the scans start now, off the request path)"
scan_imgs=("$reg/scan/critical:1.0" "$reg/scan/high:1.0" "$reg/scan/clean:1.0" "$reg/scan/unreadable:1.0")
lookup --url "$url/validate" "${scan_imgs[@]}"
until_done=$((SECONDS + 60))
while lookup --url "$url/validate" -o json "${scan_imgs[@]}" | grep -q report_not_available; do
  if ((SECONDS > until_done)); then echo "run: scans did not finish; the log:" >&2; tail -20 "$dir/serve.log" >&2; exit 1; fi
  sleep 0.2
done
echo "-- a moment later: accepted, rejected (a critical finding; the scan policy is --scan-max critical=0), scan_failed"
out=$(lookup --url "$url/validate" "${scan_imgs[@]}")
echo "$out"
for want in "scan: rejected" "scan: accepted" "scan: scan_failed"; do
  grep -q "$want" <<<"$out" || { echo "run: no '$want' among the answers" >&2; exit 1; }
done

echo "== 7. /validate, the full value (schema moat.v2) of a scanned image"
lookup --url "$url/validate" -o json "$reg/scan/high:1.0"

echo "== 8. /mutate: tag@digest for an Assign mutator; a pinned reference comes back unchanged"
pinned=$(lookup --url "$url/mutate" -o json "$reg/demo/app:v2" | sed -n 's/.*"value":"\([^"]*\)".*/\1/p')
lookup --url "$url/mutate" "$reg/demo/app:v2" "$pinned"

echo "== 9. a new CVE: a database update adds a critical advisory for the clean image, already scanned"
sleep 1.1 # first-seen dates have whole seconds: the new finding must come after the first scan
$moat dev-vulndb --later --out "$dir/vulnerability.next.db" >/dev/null
mv "$dir/vulnerability.next.db" "$dir/vulnerability.db" # moat serve loads the changed file (--db-update-interval 1s)
until_done=$((SECONDS + 60))
until out=$(lookup --url "$url/validate" "$reg/scan/clean:1.0") && grep -q "in their grace period" <<<"$out"; do
  if ((SECONDS > until_done)); then echo "run: the new database never reached the clean image; the log:" >&2; tail -20 "$dir/serve.log" >&2; exit 1; fi
  sleep 0.2
done
echo "-- accepted for now: the critical came with the update, and --scan-grace critical=72h counts from when Moat first saw it"
echo "$out"

echo "== 10. a client without a certificate is refused"
if $moat lookup --url "$url/validate" --ca "$dir/certs/ca.crt" "$reg/demo/app:v1" 2>&1; then
  echo "run: a client without a certificate was served" >&2; exit 1
fi

cat <<MSG

Moat is serving on $url (validate: $url/validate, mutate: $url/mutate)
  metrics and probes: http://127.0.0.1:$metrics_port/metrics  /healthz  /readyz
  try:   bin/moat lookup --certs $dir/certs --url $url/validate $reg/demo/nginx:latest
  logs:  $dir/serve.log, $dir/registry.log
MSG

if [ "${MOAT_RUN_ONCE:-}" = 1 ]; then
  echo "run: all steps passed"
  exit 0
fi
echo "Press Ctrl-C to stop."
wait
