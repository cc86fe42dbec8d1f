#!/bin/sh
# Installs the libraries deps.lock names into vendor/, unless the cache restored them: each
# "package" is generated (a slow step, as a real install is), with a stamp of its version.
set -eu
installed=0; cached=0
while read -r name version; do
  case "$name" in ''|'#'*) continue ;; esac
  stamp="vendor/$name/VERSION"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then cached=$((cached + 1)); continue; fi
  mkdir -p "vendor/$name"
  case "$name" in
    strings) printf 'to_lower() { tr "A-Z" "a-z"; }\n' ;;
    case) printf 'to_upper() { tr "a-z" "A-Z"; }\n' ;;
    trim) printf 'trim_char() { sed -e "s/^$1*//" -e "s/$1*\\$//"; }\n' ;;
  esac >"vendor/$name/lib.sh"
  # The slow part of a real install: many small files.
  i=0; while [ $i -lt 300 ]; do echo "$name $version file $i" >"vendor/$name/f$i"; i=$((i + 1)); done
  sleep 1
  echo "$version" >"$stamp"
  installed=$((installed + 1))
done <deps.lock
echo "dependencies: $installed installed, $cached restored from the cache"
