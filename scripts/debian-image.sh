#!/usr/bin/env bash
# Builds (once) a real Debian bookworm image with debootstrap, as an OCI image layout of two
# layers: the minbase system, then a layer that removes the documentation (whiteouts) and adds
# a release file. Prints the layout's path. Cached in /var/cache/boxcar: later runs reuse it.
set -euo pipefail
out=${BOXCAR_IMAGE_CACHE:-/var/cache/boxcar}/debian-bookworm
if [[ -f "$out/index.json" ]]; then echo "$out"; exit 0; fi
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/boxcar-debian-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "debian-image: debootstrap bookworm from $mirror (about 30 s, once)" >&2
debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -5 "$work/debootstrap.log" >&2; exit 1; }
cd "$work"
umoci init --layout oci
umoci new --image oci:bookworm
umoci unpack --image oci:bookworm bundle >/dev/null
rm -rf bundle/rootfs && mv rootfs bundle/rootfs
umoci repack --image oci:bookworm bundle
# The second layer: whiteouts for the docs, and a file of its own.
rm -rf bundle/rootfs/usr/share/doc/*
echo "built by boxcar's make run on $(date -u +%Y-%m-%d)" > bundle/rootfs/etc/boxcar-release
umoci repack --image oci:bookworm bundle
umoci config --image oci:bookworm --config.cmd /bin/sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  --os linux --architecture amd64
mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp" && mv oci "$out.tmp" && mv "$out.tmp" "$out"
echo "$out"
