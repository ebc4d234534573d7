// tar-split: the record of every byte of a tar that is not file payload, so that the
// original tar can be rebuilt byte for byte from the record plus the stored payloads
// (what keeps an exported layer's diffID equal to the imported one). TarReader feeds a
// TarSplitWriter while it reads; rebuild_layer_tar (declared in layer_tar.hpp, defined in
// tar_split.cpp) replays the record.
//
// Format, version 2 (all integers unsigned LEB128 varints unless noted):
//   magic    "WLTS" 0x02                        (4 bytes + version byte)
//   records  one tag byte each, then its fields:
//     0x01 LITERAL  len, len bytes             non-payload bytes, verbatim
//     0x04 MATCH    distance, len              `len` bytes copied from `distance` bytes back
//                   in the history: the bytes LITERAL and MATCH records produced so far
//                   (at most kTarSplitWindow back; the copy may overlap itself, as in LZ77).
//                   Headers repeat (field values, security descriptors, name prefixes),
//                   so this keeps the record near the size of their unique content.
//     0x02 ZEROS    count                      `count` zero bytes (padding, empty fields)
//     0x03 PAYLOAD  entry_delta, shared, suffix_len, suffix bytes, size (> 0)
//                   the payload of the entry whose index (0-based, in archive order,
//                   extension headers not counted) is the previous PAYLOAD's index +
//                   entry_delta (the first one: entry_delta itself); its name is the first
//                   `shared` bytes of the previous PAYLOAD's name + suffix; `size` bytes.
//                   Empty payloads have no PAYLOAD record.
//     0x00 END      total_size, 32 raw bytes of the SHA-256 of the whole tar
//   Nothing follows END. Runs of 32 or more zero bytes are stored as ZEROS. Version 1 is
//   the same without MATCH; it is still read. A 20,000-entry Windows layer with a security
//   descriptor per entry (43 MB of headers and padding) records in 6 MB.
// A reader of the record checks the magic, the version, every length against the end of
// the record and, when rebuilding, the total size and the SHA-256 of what it wrote.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io.hpp"
#include "sha256.hpp"

namespace winlayer {

constexpr std::uint8_t kTarSplitVersion = 2;
constexpr std::size_t kTarSplitWindow = 64 * 1024;

class TarSplitWriter {
public:
    TarSplitWriter();
    // From now on the record goes to `sink` as it grows (in pieces, the rest at finish),
    // so that it is never held whole in memory; take() then returns what was not sent.
    void stream_to(Sink* sink) { sink_ = sink; }
    // Non-payload bytes, in stream order.
    void raw(const std::uint8_t* data, std::size_t n);
    // The payload of entry `entry_index` comes here in the stream.
    void payload(std::uint64_t entry_index, const std::string& name, std::uint64_t size);
    // Closes the record: the stream had `total_size` bytes hashing to `digest`.
    void finish(std::uint64_t total_size, const Sha256::Digest& digest);
    // The finished record (moved out; the writer is then empty).
    std::string take();
    // Bytes of record so far (memory held).
    std::size_t size() const { return out_.size() + literal_.size(); }

private:
    void flush_literal();
    void flush_zeros();
    void emit_literal(const char* data, std::size_t n);
    void spill(bool all);

    Sink* sink_ = nullptr;
    std::string out_;
    std::string literal_;
    // LZ77 state: the recent history of literal bytes and, per 4-byte hash, the last
    // position in it where those bytes were seen (+ 1; 0 = never). 32-bit positions in a
    // small table keep the probes in the L1 cache: they are most of the writer's time.
    std::string history_;
    std::vector<std::uint32_t> last_seen_;
    std::uint64_t zeros_ = 0;
    std::uint64_t last_index_ = 0;
    bool any_payload_ = false;
    std::string last_name_;
    bool finished_ = false;
};

struct TarSplitPayload {
    std::uint64_t entry_index = 0;
    std::string name;
    std::uint64_t size = 0;
};

// What a record says about the tar it describes (validates the whole record).
struct TarSplitSummary {
    std::uint64_t total_size = 0;
    std::string digest;  // "sha256:<hex>"
    std::vector<TarSplitPayload> payloads;
};

// Throws Error(StoreCorrupt) for a damaged or unknown record.
TarSplitSummary inspect_tar_split(const std::string& record);

}  // namespace winlayer
