#!/usr/bin/env bash
# `make run`: the sample pipeline, with one job in a real Debian image that Boxcar pulls from a
# registry on loopback (started here, pushed to with skopeo, stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
layout=$(scripts/debian-image.sh)
port=${BOXCAR_DEMO_REGISTRY_PORT:-5055}
reg=$(mktemp -d /tmp/boxcar-registry-XXXXXX)
cat >"$reg/config.yml" <<YAML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $reg/data } }
http: { addr: 127.0.0.1:$port }
YAML
docker-registry serve "$reg/config.yml" >"$reg/log" 2>&1 &
pid=$!
stop_registry() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$reg"; }
trap stop_registry EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:bookworm" "docker://127.0.0.1:$port/debian:bookworm"
node dist/src/cli/main.js pipeline examples/pipeline.yaml
