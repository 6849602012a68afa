#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) against the
# project's codecs and the gateway's path mapping, and runs each for a bounded time on its corpus
# (tests/fuzz/corpus/<target>; new inputs go to a scratch copy, the corpus in git only grows by
# hand). A crash fails the run and leaves the input under OUT_DIR; fix it and add the input to the
# corpus as a regression case.
#   tests/fuzz/run.sh OUT_DIR [SECONDS_PER_TARGET]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: run.sh OUT_DIR [SECONDS]}
secs=${2:-20}
mkdir -p "$out"
cflags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE
  -I"$src/runtime" -I/usr/include/luajit-2.1)
clang "${cflags[@]}" -o "$out/fuzz_envelope" "$src/tests/fuzz/fuzz_envelope.c" "$src/runtime/codec.c" \
  "$src/runtime/mlua_memory.c" /usr/lib/x86_64-linux-gnu/libluajit-5.1.a -lm -ldl
clang "${cflags[@]}" -o "$out/fuzz_wamp" "$src/tests/fuzz/fuzz_wamp.c" "$src/runtime/wamp_codec.c" \
  "$src/runtime/codec.c" /usr/lib/x86_64-linux-gnu/libluajit-5.1.a -ljansson -lmsgpackc -lm -ldl
clang "${cflags[@]}" -o "$out/fuzz_path" "$src/tests/fuzz/fuzz_path.c" "$src/runtime/http_rpc_path.c" \
  $(pkg-config --cflags --libs libh2o)
status=0
for t in envelope:envelope wamp:wamp_json wamp:wamp_msgpack path:path; do
  target=${t%%:*} corpus=${t#*:}
  work="$out/corpus-$corpus"
  rm -rf "$work" && cp -r "$src/tests/fuzz/corpus/$corpus" "$work"
  echo "== fuzz_$target on $corpus for ${secs}s"
  (cd "$out" && ASAN_OPTIONS=detect_leaks=1 "./fuzz_$target" -max_total_time="$secs" \
    -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$work" 2>&1 | tail -n 12) ||
    status=1
done
exit $status
