#!/usr/bin/env bash
# `make run`: the sample repository's CI pipeline, for real. Its jobs check out a local git
# repository made from examples/sample-repo, pass artifacts along `needs`, cache their
# dependencies, and one job runs in a real Debian image that Boxcar pulls from a registry on
# loopback (started here, pushed to with skopeo, stopped at the end). The pipeline runs three
# times: as the repository's own code, again (its cache restored), and as a fork's pull
# request (untrusted: no runc, and a cache of its own). Then a pull request webhook runs it
# through `boxcar serve`, reporting commit statuses to a stand-in for GitHub's API.
set -euo pipefail
cd "$(dirname "$0")/.."
layout=$(scripts/debian-image.sh)
port=${BOXCAR_DEMO_REGISTRY_PORT:-5055}
work=$(mktemp -d /tmp/boxcar-demo-XXXXXX)
cat >"$work/registry.yml" <<YAML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: 127.0.0.1:$port }
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:bookworm" "docker://127.0.0.1:$port/debian:bookworm"
# The sample's WASM linter, published as an OCI artifact (as `oras push` would: skopeo copies images only).
node --input-type=module -e "
  import { readFileSync } from 'node:fs';
  import { pushArtifact } from './dist/src/testing/oci-images.js';
  await pushArtifact('127.0.0.1:$port', 'tools/linelint:1', {
    config: { mediaType: 'application/vnd.wasm.config.v0+json', data: Buffer.from('{}') },
    layers: [{ mediaType: 'application/wasm', data: readFileSync('dist/wasm/linelint.wasm') }],
  });"

# The sample repository, as a developer would have it.
repo="$work/slugify"
cp -r examples/sample-repo "$repo"
git -C "$repo" init -q
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -q -m "slugify: a sample project"

boxcar() { node dist/src/cli/main.js "$@"; }
banner() { printf '\n\033[1m══ %s\033[0m\n' "$*"; }
banner "1. the pipeline of $(git -C "$repo" rev-parse --short HEAD), checked out from $repo"
boxcar pipeline --repo "$repo"
banner "2. the same commit again: the dependency cache is restored"
boxcar pipeline --repo "$repo" | grep -E '^deps +│|^sample-ci|^pipeline'
banner "3. as a fork's pull request: untrusted (no runc), the trusted cache neither read nor written"
boxcar pipeline --repo "$repo" --source external_pr | grep -E '^deps +│|RUNTIME|^(deps|build|unit-tests|debian) |^pipeline'
banner "4. a pull request webhook through boxcar serve, statuses to a stand-in for GitHub's API"
node scripts/demo-pull-request.mjs "$repo"
