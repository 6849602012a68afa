#!/usr/bin/env bash
# bench/soak/run.sh: the long soak of issue "Hardening" (see bench/README.md, section "Soak").
# The same driver as the 60 s test blackbox.soak (tests/blackbox/lib/soak.mjs): a bounded mixed
# load (HTTP, NATS, WAMP) on the shipped services with a private nats-server restarted every
# NATS_EVERY seconds and a private PostgreSQL every PG_EVERY seconds; prints calls answered /
# failed / wrong per kind, the restarts, the RSS series summary and the verdict; exits 1 on FAIL.
#
# Environment: BUILD_DIR (default ./build-asan: the ASan+UBSan build), DURATION (600 seconds),
# NATS_EVERY (30), PG_EVERY (45), NICE (10: the load runs under `nice -n NICE`).
# Files (logs, the PostgreSQL data folder, soak-report.json with the full RSS series) go to
# BUILD_DIR/bench-tmp/soak-<pid>.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$(realpath -m "${BUILD_DIR:-$ROOT/build-asan}")
[ -x "$BUILD_DIR/microservice" ] || { echo "run.sh: $BUILD_DIR/microservice not found (cmake -S . -B build-asan -DMICROSERVICE_SANITIZE=ON && cmake --build build-asan)" >&2; exit 1; }
[ -d "$ROOT/node_modules/nats" ] && [ -d "$ROOT/node_modules/autobahn" ] || (cd "$ROOT" && npm install)

sanitized=0
grep -q '^MICROSERVICE_SANITIZE:BOOL=ON' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null && sanitized=1

export MICROSERVICE_BIN=$BUILD_DIR/microservice
export MICROSERVICE_SOURCE_DIR=$ROOT
export MICROSERVICE_TEST_TMP=$BUILD_DIR/bench-tmp
export MICROSERVICE_SANITIZED=$sanitized
cd "$ROOT"
exec nice -n "${NICE:-10}" node bench/soak/soak.mjs \
  --duration "${DURATION:-600}" --nats-every "${NATS_EVERY:-30}" --pg-every "${PG_EVERY:-45}"
