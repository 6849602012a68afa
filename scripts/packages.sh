#!/bin/sh
# Prints the Debian packages of the given sections of scripts/packages.txt (every section when
# none is given), one a line, each once. Fails on a section the file does not have.
#   scripts/packages.sh build runtime
# POSIX sh and awk only: the Dockerfile runs it in a bare Debian image. PACKAGES_FILE overrides
# the list's path.
set -eu
list=${PACKAGES_FILE:-$(dirname "$0")/packages.txt}
awk -v want="$*" '
  BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) wanted[w[i]] = 1 }
  { sub(/#.*/, "") }
  /^[ \t]*\[[A-Za-z0-9_-]+\][ \t]*$/ {
    section = $0; sub(/^[ \t]*\[/, "", section); sub(/\].*$/, "", section); found[section] = 1; next
  }
  NF == 0 { next }
  section == "" { print FILENAME ": package outside a section: " $1 > "/dev/stderr"; bad = 1; exit 1 }
  n == 0 || (section in wanted) { for (i = 1; i <= NF; i++) if (!seen[$i]++) print $i }
  END {
    if (bad) exit 1
    for (s in wanted) if (!(s in found)) { print FILENAME ": no section [" s "]" > "/dev/stderr"; exit 1 }
  }
' "$list"
