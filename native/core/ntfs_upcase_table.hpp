// NTFS's upper-case table in run form, generated into ntfs_upcase_table.cpp by
// gen_ntfs_upcase.py (which says what it holds and why); path_rules' ntfs_upcase reads it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace winlayer {

// Every stride-th UTF-16 code unit from first to last maps to itself plus delta; the units
// a stride-2 run skips, and those in no run, map to themselves. Sorted, not overlapping.
struct UpcaseRun {
    std::uint16_t first;
    std::uint16_t last;
    std::int32_t delta;
    std::uint8_t stride;  // 1 or 2
};

extern const UpcaseRun kUpcaseRuns[];
extern const std::size_t kUpcaseRunCount;

}  // namespace winlayer
