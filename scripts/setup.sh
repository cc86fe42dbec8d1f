#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, npm packages, build.
# Every step checks first, so a second run does no work beyond the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages Boxcar drives. Runtimes added later append here.
DEBIAN_PACKAGES=(runc runsc conmon busybox-static tar attr iproute2 nftables util-linux gcc libc6-dev clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt postgresql qemu-system-x86 qemu-utils linux-image-cloud-amd64 lz4 e2fsprogs docker-registry skopeo umoci debootstrap apache2-utils zstd curl prometheus chromium fonts-dejavu-core)
# (chromium and its fonts: the dashboard's browser tests drive Debian's /usr/bin/chromium through playwright-core.)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: Debian packages missing (${missing[*]}); run this as root so apt-get can install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lock file changed since the last install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm packages (better-sqlite3 builds from source: about a minute)"
  npm ci --no-audit --no-fund --loglevel=error
fi

npx --no-install tsc -p tsconfig.json

# The sample WASI programs (examples/wasm/*.c), rebuilt when their source changes.
mkdir -p dist/wasm
for src in examples/wasm/*.c; do
  out="dist/wasm/$(basename "${src%.c}").wasm"
  if [[ ! -f "$out" || "$src" -nt "$out" ]]; then
    clang --target=wasm32-wasi --sysroot=/usr -O2 -o "$out" "$src"
  fi
done
