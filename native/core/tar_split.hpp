// tar-split: the record of every byte of a tar that is not file payload, so that the
// original tar can be rebuilt byte for byte from the record plus the stored payloads
// (what keeps an exported layer's diffID equal to the imported one). TarReader feeds a
// TarSplitWriter while it reads; rebuild_layer_tar (declared in layer_tar.hpp, defined in
// tar_split.cpp) replays the record.
//
// Format, version 1 (all integers unsigned LEB128 varints unless noted):
//   magic    "WLTS" 0x01                        (4 bytes + version byte)
//   records  one tag byte each, then its fields:
//     0x01 LITERAL  len, len bytes             non-payload bytes, verbatim
//     0x02 ZEROS    count                      `count` zero bytes (padding, empty fields)
//     0x03 PAYLOAD  entry_delta, shared, suffix_len, suffix bytes, size (> 0)
//                   the payload of the entry whose index (0-based, in archive order,
//                   extension headers not counted) is the previous PAYLOAD's index +
//                   entry_delta (the first one: entry_delta itself); its name is the first
//                   `shared` bytes of the previous PAYLOAD's name + suffix; `size` bytes.
//                   Empty payloads have no PAYLOAD record.
//     0x00 END      total_size, 32 raw bytes of the SHA-256 of the whole tar
//   Nothing follows END. Runs of 32 or more zero bytes are stored as ZEROS, so a header
//   block costs about its non-zero bytes; a 20,000-entry Windows layer records in a few MB.
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

constexpr std::uint8_t kTarSplitVersion = 1;

class TarSplitWriter {
public:
    TarSplitWriter();
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

    std::string out_;
    std::string literal_;
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
