#!/usr/bin/env bash
# Runs every test: installs and builds what is missing (release and ASan+UBSan builds), then ctest
# in both: C unit tests and black-box tests against real nats-server processes that the tests
# start on their own ports (files under build*/test-tmp/) and stop when they end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --asan

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
echo "== release build (build/)"
(cd build && ctest --output-on-failure -j2 --timeout 300) || status=1
echo "== ASan+UBSan build (build-asan/)"
(cd build-asan && ctest --output-on-failure -j2 --timeout 300) || status=1
exit $status
