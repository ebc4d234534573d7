#!/usr/bin/env bash
# Fuzzes the tar reader + tar-split rebuild (native/fuzz/fuzz_tar.cpp) with libFuzzer for a
# bounded time. Needs clang. Seeds: the regression corpus in native/fuzz/corpus (kept crash
# inputs and small valid/invalid tars) plus the shared fixtures when present. A crash
# leaves its input in $BUILD/artifacts: add it to native/fuzz/corpus once fixed.
#   ci/fuzz_tar.sh [SECONDS]     (default 20; FUZZ_BUILD_DIR overrides build/tar-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
build="${FUZZ_BUILD_DIR:-build/tar-fuzz}"
cxx="${CXX_FUZZ:-clang++}"
command -v "$cxx" >/dev/null || { echo "fuzz_tar: $cxx not found (apt-get install clang)" >&2; exit 2; }

mkdir -p "$build/corpus" "$build/artifacts"
"$cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -Inative -o "$build/fuzz_tar" native/fuzz/fuzz_tar.cpp \
  native/core/tar.cpp native/core/tar_split.cpp native/core/sha256.cpp native/core/error.cpp \
  native/core/encoding.cpp

seeds=(native/fuzz/corpus)
fixtures="${WINLAYER_FIXTURES:-../shared/fixtures}"
[ -d "$fixtures" ] && seeds+=("$fixtures")

"$build/fuzz_tar" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=1024 \
  -artifact_prefix="$build/artifacts/" -print_final_stats=1 "$build/corpus" "${seeds[@]}"
