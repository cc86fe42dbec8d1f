#!/bin/sh
# The unit tests: TAP output, exit 1 on any failure.
bin=${1:-dist/slugify}
n=0; failed=0
check() {
  n=$((n + 1))
  got=$("$bin" "$1")
  if [ "$got" = "$2" ]; then echo "ok $n - \"$1\" -> $2"; else echo "not ok $n - \"$1\": got \"$got\", want \"$2\""; failed=$((failed + 1)); fi
}
check "Hello World" "hello-world"
check "  CI/CD   jobs!  " "ci-cd-jobs"
check "Boxcar 2026" "boxcar-2026"
check "already-a-slug" "already-a-slug"
echo "1..$n"
[ "$failed" -eq 0 ]
