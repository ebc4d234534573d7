#!/usr/bin/env bash
# Builds winlayer's native code with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# the test suite against it. The sanitizer runtime must be loaded before the interpreter's
# own code, hence LD_PRELOAD; leak detection is off (CPython keeps memory until exit).
# Not covered here: the Wine run (a mingw build) and the libFuzzer run (its own ASan build).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=build/asan-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q scikit-build-core pybind11
"$venv/bin/pip" install -q --no-build-isolation -Cbuild-dir=build/asan \
    -Ccmake.build-type=RelWithDebInfo -Ccmake.define.WINLAYER_SANITIZE=address,undefined \
    '.[test]'

runtime="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD="$runtime"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# pytest runs from the build's own interpreter; the tests import the sanitized module. The
# linters' tests (test_repo, test_workflows: the dev extra's tools) hold no native code.
exec "$venv/bin/python" -m pytest -p no:cacheprovider -m "not wine" \
    --deselect tests/test_tar_fuzz.py::test_fuzz_for_15_seconds --ignore tests/test_repo.py \
    --ignore tests/test_workflows.py "$@"
