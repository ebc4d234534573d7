#!/usr/bin/env bash
# Fuzzes a libFuzzer target of native/fuzz for a bounded time: `tar` (the tar reader +
# tar-split rebuild, fuzz_tar.cpp, the default) or `layer_tar` (the Windows layer
# semantics, fuzz_layer_tar.cpp). Needs clang. Seeds: the regression corpus in
# native/fuzz/corpus (kept crash inputs and small valid/invalid tars) plus the shared
# fixtures when present. A crash leaves its input in $BUILD/artifacts: add it to
# native/fuzz/corpus once fixed.
#   ci/fuzz_tar.sh [SECONDS] [TARGET]   (default 20 s, tar; FUZZ_BUILD_DIR overrides build/TARGET-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
target="${2:-tar}"
build="${FUZZ_BUILD_DIR:-build/$target-fuzz}"
cxx="${CXX_FUZZ:-clang++}"
command -v "$cxx" >/dev/null || { echo "fuzz_tar: $cxx not found (apt-get install clang libclang-rt-dev)" >&2; exit 2; }

mkdir -p "$build/corpus" "$build/artifacts"
"$cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -Inative -o "$build/fuzz_$target" "native/fuzz/fuzz_$target.cpp" native/core/*.cpp

seeds=(native/fuzz/corpus)
fixtures="${WINLAYER_FIXTURES:-../shared/fixtures}"
[ -d "$fixtures" ] && seeds+=("$fixtures")

"$build/fuzz_$target" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=1024 \
  -artifact_prefix="$build/artifacts/" -print_final_stats=1 "$build/corpus" "${seeds[@]}"
