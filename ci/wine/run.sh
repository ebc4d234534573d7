#!/usr/bin/env bash
# Cross-compiles the Windows backend (native/windows), the core, the portable backend and
# the HCS emulator (native/hcs_emulator, a vmcompute.dll look-alike) with mingw-w64, and
# runs ci/wine/wine_test.cpp under Wine against the emulator. Exits non-zero when the
# build or any test fails; the last line of the test output is "N passed, M failed".
#
# Incremental: objects live in build/wine/obj and are rebuilt when their source or any
# header under native/ is newer. The Wine prefix (created on the first run, ~5 s, then
# reused) is ${XDG_CACHE_HOME:-~/.cache}/winlayer/wine-prefix, outside the source tree: its
# dosdevices/z: links to /, which a walk of the tree would follow. With WINLAYER_WINE_BUILD
# set, everything, the prefix too, goes under that folder.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${WINLAYER_WINE_BUILD:-$root/build/wine}
prefix=${WINLAYER_WINE_BUILD:+$WINLAYER_WINE_BUILD/prefix}
prefix=${prefix:-${XDG_CACHE_HOME:-$HOME/.cache}/winlayer/wine-prefix}
cxx=${MINGW_CXX:-x86_64-w64-mingw32-g++-posix}
dlltool=${MINGW_DLLTOOL:-x86_64-w64-mingw32-dlltool}
wine=${WINE:-$(command -v wine64 || command -v wine || echo /usr/lib/wine/wine64)}

for tool in "$cxx" "$dlltool" "$wine"; do
    command -v "$tool" >/dev/null || { echo "ci/wine/run.sh: $tool not found (install g++-mingw-w64-x86-64-posix mingw-w64-tools wine64)" >&2; exit 2; }
done

mkdir -p "$out/obj" "$out/bin" "$out/emulator"
export root out cxx
# The warnings MSVC's /W4 gives, where g++ has one, as errors, so that what the MSVC build
# of the wheel would warn about fails here first:
#   -Wall -Wextra    C4100 unused parameter, C4189/C4101 unused local, C4505 unused function,
#                    C4018/C4389 signed/unsigned compare, C4706 assignment in a condition,
#                    C4701 maybe uninitialised (-O1 runs that analysis)
#   -Wshadow         C4456-C4459 a declaration hides a local, parameter, member or global
#   -Wconversion     C4244/C4267/C4305 a conversion may lose data (int64 -> int, size_t ->
#                    DWORD, double -> float); for C++ it leaves out -Wsign-conversion
#   -pedantic-errors /permissive-: no GNU extensions (VLAs, statement expressions, zero-size
#                    arrays, ...); tests/test_native_portability.py greps for __attribute__
# Left out: -Wsign-conversion (11 findings, all int <-> unsigned of equal width, which /W4
# does not warn about: its C4365 is off by default).
export flags="-std=c++17 -O1 -Wall -Wextra -Wshadow -Wconversion -pedantic-errors -Werror -DUNICODE -D_UNICODE -DWIN32_LEAN_AND_MEAN -DNOMINMAX -I$root/native"

# Compiles $1 (a path under $root) to $out/obj/<path>.o unless it is up to date.
compile() {
    local src=$1 obj="$out/obj/${1#"$root"/}.o"
    mkdir -p "$(dirname "$obj")"
    if [[ -f $obj && ! $src -nt $obj ]] && [[ -z $(find "$root/native" "$root/ci/wine" -name '*.h*' -newer "$obj" -print -quit) ]]; then
        return 0
    fi
    echo "  c++ ${1#"$root"/}"
    $cxx $flags -c "$src" -o "$obj"
}
export -f compile

objects() {  # the object paths of the given sources
    for s in "$@"; do echo "$out/obj/${s#"$root"/}.o"; done
}

core=("$root"/native/core/*.cpp)
# The portable backend without its POSIX platform layer (Win32 has its own).
portable=()
for s in "$root"/native/portable/*.cpp; do
    [[ $s == *posix* || $s == *linux* ]] || portable+=("$s")
done
windows=("$root"/native/windows/*.cpp)
emulator=("$root"/native/hcs_emulator/*.cpp)
test_src=("$root/ci/wine/wine_test.cpp")

echo "building with $cxx"
printf '%s\n' "${core[@]}" "${portable[@]}" "${windows[@]}" "${emulator[@]}" "${test_src[@]}" |
    xargs -P 2 -I{} bash -c 'compile "$@"' _ {}

# The delay-load import library, as CMake makes it for the mingw build of the module.
"$dlltool" -d "$root/native/windows/vmcompute.def" -y "$out/libvmcompute_delay.a"

mapfile -t core_o < <(objects "${core[@]}")
mapfile -t portable_o < <(objects "${portable[@]}")
mapfile -t windows_o < <(objects "${windows[@]}")
mapfile -t emulator_o < <(objects "${emulator[@]}" "$root/native/windows/win_util.cpp")

$cxx -shared -static -o "$out/emulator/vmcompute.dll" "${emulator_o[@]}" "${portable_o[@]}" "${core_o[@]}" -lole32 -lbcrypt
$cxx -static -o "$out/bin/wine_test.exe" $(objects "${test_src[@]}") "${windows_o[@]}" "${core_o[@]}" \
    "$out/libvmcompute_delay.a" -municode -lole32 -ladvapi32

# The program looks for vmcompute.dll in System32 only; it installs the emulator there
# itself after checking that a copy beside it is ignored.
cp "$out/emulator/vmcompute.dll" "$out/bin/vmcompute.dll"
work="$out/work"
rm -rf "$work"
mkdir -p "$work"

mkdir -p "$(dirname "$prefix")"
export WINEPREFIX="$prefix" WINEDEBUG=-all
# The emulator's portable backend makes prepared sandboxes as copies (overlayfs is Linux's).
export WINLAYER_PORTABLE_MOUNT=copy
winpath() { echo "Z:${1//\//\\}"; }
echo "running wine_test.exe under $("$wine" --version 2>/dev/null || echo wine)"
"$wine" "$out/bin/wine_test.exe" "$(winpath "$out/emulator/vmcompute.dll")" "$(winpath "$work")"
