#!/bin/sh
# Bundles the vendored libraries and src/ into one executable, dist/slugify.
set -eu
mkdir -p dist
{
  echo '#!/bin/sh'
  cat vendor/*/lib.sh src/slugify.sh
  echo 'slugify "$@"'
} >dist/slugify
chmod +x dist/slugify
echo "built dist/slugify ($(wc -l <dist/slugify) lines) at commit $BOXCAR_COMMIT"
