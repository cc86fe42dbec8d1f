# slugify TEXT...: lower case, runs of anything but letters and digits become one "-",
# no "-" at either end.
slugify() {
  printf '%s' "$*" | to_lower | sed -e 's/[^a-z0-9]\{1,\}/-/g' | trim_char -
  echo
}
