#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks (Debian packages, npm packages for the tests) and
# builds the program. Idempotent: a second run installs nothing and rebuilds only what changed.
#   scripts/setup.sh            release build in build/
#   scripts/setup.sh --asan     also the ASan+UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages: every section of scripts/packages.txt, the one list (the Dockerfile
# installs its build and runtime sections from the same file).
# Never install Debian's "luajit" package: it conflicts with libluajit2-5.1-dev (the OpenResty
# branch we need) and apt would silently remove the latter.
package_list=$(scripts/packages.sh)
[ -n "$package_list" ] || { echo "setup: no packages in scripts/packages.txt" >&2; exit 1; }
mapfile -t packages <<<"$package_list"
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages of the tests and benchmarks (real clients: nats, later autobahn, playwright-core)
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
if [ "${1:-}" = "--asan" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMICROSERVICE_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
fi
