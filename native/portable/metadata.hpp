// The per-layer metadata file, `<layer>/winlayer.meta`: what a plain filesystem cannot
// hold about a Windows layer (attributes, security descriptors, the four times, EAs,
// reparse data, alternate streams, hard-link groups, tombstones) plus the tar-split record
// of the imported tar. The format is versioned and checksummed; docs/ARCHITECTURE.md
// ("Portable backend") describes it byte by byte. Reading anything else is StoreCorrupt.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/io.hpp"
#include "../core/layer.hpp"
#include "../core/path_rules.hpp"
#include "../core/sha256.hpp"
#include "platform.hpp"

namespace winlayer::portable {

constexpr const char* kMetaFileName = "winlayer.meta";
constexpr const char* kStreamsDirName = ".streams";  // alternate-stream contents, by blob number
constexpr std::uint32_t kMetaVersion = 1;

enum class LayerKind : std::uint8_t { ReadOnly = 0, Sandbox = 1 };

struct StreamRecord {
    std::string name;         // "stream" of "file:stream"
    std::uint64_t size = 0;
    std::uint32_t blob = 0;   // contents in <layer>/.streams/<blob>
};

// One entry of the layer: a directory, a file, or a reparse point (Symlink). A hard link
// inside the layer is a File sharing `group` (and the inode on disk) with its other names;
// a hard link to a file of a parent layer is a copy here with `parent_link` set, exported
// again as a link to entry.link_target.
struct EntryRecord {
    LayerEntry entry;  // type is Directory, File or Symlink
    std::uint32_t group = 0;  // hard-link group inside this layer; 0 = none
    bool parent_link = false;
    std::vector<StreamRecord> streams;
};

struct LayerMeta {
    LayerKind kind = LayerKind::ReadOnly;
    bool imported = false;       // content came from import_layer (tar-split present)
    std::string diff_id;         // "sha256:<hex>" of the imported tar
    std::uint64_t size = 0;      // bytes of file data
    std::uint64_t size_limit = 0;  // sandbox size limit in bytes (expand_sandbox_size)
    std::vector<std::string> parents;  // sandbox: the parent chain it was created with
    std::vector<EntryRecord> entries;
    std::vector<std::string> tombstones;  // layer paths ("Files/...") deleted from the parents
};

// Entry records held encoded, as in the layer section, in 256 KiB blocks, with the
// distinct security descriptors stored once in the same blocks (indexed by a 128-bit
// digest): an import keeps a record in its encoded size (about 150 bytes) instead of
// several hundred of structs and strings, and writes the records out as they are. Given a spill file, full blocks go there and only the block being filled
// (and a couple read back) stay in memory. Replacing a record appends its new encoding;
// the old bytes stay (replacements are rare: a folder listed twice, a stream added).
class EntryTable {
public:
    EntryTable() = default;
    explicit EntryTable(File spill) : spill_(std::move(spill)) {}
    std::size_t add(const EntryRecord& r);  // the record's number
    void replace(std::size_t i, const EntryRecord& r);
    void remove(std::size_t i);  // left out of the layer section
    bool removed(std::size_t i) const { return slots_[i].removed; }
    EntryRecord get(std::size_t i) const;
    std::string path(std::size_t i) const;  // get(i).entry.path, without decoding the rest
    std::size_t size() const { return slots_.size(); }
    std::size_t live() const { return live_; }
    // The distinct security descriptors, numbered in order of first use.
    std::uint32_t security_descriptor_count() const { return static_cast<std::uint32_t>(sd_slots_.size()); }
    std::string security_descriptor(std::uint32_t n) const;
    // The encodings of the live records, in record order.
    void visit_encoded(const std::function<void(std::string_view)>& visit) const;
    void visit(const std::function<void(const EntryRecord&)>& visit) const;
    // Closes the spill file (its folder may then be removed, on Windows too).
    void close_spill() { spill_.reset(); }

private:
    struct Slot {
        std::uint32_t block = 0;
        std::uint32_t offset = 0;
        std::uint32_t length = 0;
        bool removed = false;
    };
    struct SdTable;
    Slot append(const std::string& bytes);  // into the block being filled
    Slot encode(const EntryRecord& r);
    EntryRecord decode(std::string_view encoded) const;
    std::string_view bytes(std::size_t i) const;  // the encoding of record i
    const std::string& block(std::uint32_t b) const;

    std::vector<std::string> blocks_;  // a spilled block is empty here
    struct Spilled {
        std::uint64_t offset;  // in the spill file
        std::uint32_t size;
    };
    std::vector<Spilled> spilled_;  // per spilled block: blocks_[0, spilled_.size())
    mutable std::optional<File> spill_;
    std::uint64_t spill_size_ = 0;
    // Spilled blocks read back, most recent first: a record and its replacement lie in
    // neighbouring blocks, so two are enough for a pass in record order.
    mutable std::string cache_[2];
    mutable std::uint32_t cached_[2] = {kNoBlock, kNoBlock};
    static constexpr std::uint32_t kNoBlock = 0xffffffffu;
    std::string scratch_;
    std::vector<Slot> slots_;
    std::size_t live_ = 0;
    std::vector<Slot> sd_slots_;  // where each distinct security descriptor is stored
    std::unordered_map<NameKey, std::uint32_t, NameKeyHash> sd_index_;  // by sd_key
};

// FILETIME (100 ns ticks since 1601) <-> Unix nanoseconds.
constexpr std::int64_t kFiletimeUnixEpoch = 116444736000000000;
// Unix nanoseconds hold only 1677-2262: other times saturate (they are what the disk shows;
// winlayer.meta keeps the exact FILETIME).
inline std::int64_t filetime_to_unix_ns(std::int64_t ft) {
    constexpr std::int64_t kMaxTicks = INT64_MAX / 100;
    if (ft < kFiletimeUnixEpoch - kMaxTicks) return -kMaxTicks * 100;
    if (ft > kFiletimeUnixEpoch + kMaxTicks) return kMaxTicks * 100;
    return (ft - kFiletimeUnixEpoch) * 100;
}
inline std::int64_t unix_ns_to_filetime(std::int64_t ns) {
    std::int64_t ticks = ns / 100 - (ns % 100 < 0 ? 1 : 0);
    return ticks + kFiletimeUnixEpoch;
}

// Serializes `meta` and `tar_split` into the file format.
std::string encode_meta(const LayerMeta& meta, const std::string& tar_split);

// Writes a metadata file in one pass without holding either section whole: the tar-split
// record streams in (as this Sink) while the layer is imported and becomes section 1 right
// after the header; finish() appends section 0, the layer, then fills in the header.
class MetaFileWriter : public Sink {
public:
    explicit MetaFileWriter(File file);
    void write(const std::uint8_t* data, std::size_t n) override;  // tar-split bytes
    // Writes the layer section (`meta` with the entries of `entries`, not meta.entries) and
    // the header, then closes the file (not synced).
    void finish(const LayerMeta& meta, const EntryTable& entries);

private:
    File file_;
    Sha256 split_hash_;
    std::uint64_t split_size_ = 0;
};
// Reads `<layer_dir>/winlayer.meta`. A missing file is StoreCorrupt too: every layer has one.
LayerMeta read_meta(const std::string& layer_dir);
// The tar-split section as a stream (StoreCorrupt likewise): its checksum is checked when
// its end is read.
std::unique_ptr<Source> open_tar_split(const std::string& layer_dir);
// read_meta without the entries and tombstones (not decoded; the section is still checked).
LayerMeta read_meta_head(const std::string& layer_dir);
// The entries of `<layer_dir>/winlayer.meta` kept as stored and decoded one at a time: an
// export holds the layer section's bytes (a record in about 150 bytes, each security
// descriptor once) instead of every record decoded. All of it is checked on reading, and
// `each` sees every record (with its number) then. Throws Error(StoreCorrupt) as read_meta does.
class StoredEntries {
public:
    explicit StoredEntries(const std::string& layer_dir,
                           const std::function<void(std::size_t, const EntryRecord&)>& each = nullptr);
    StoredEntries(const StoredEntries&) = delete;  // sds_ points into bytes_
    StoredEntries& operator=(const StoredEntries&) = delete;
    std::size_t size() const { return offsets_.size(); }
    EntryRecord get(std::size_t i) const;
    std::string path(std::size_t i) const;  // get(i).entry.path, without decoding the rest
    const std::vector<std::string>& tombstones() const { return tombstones_; }

private:
    std::string bytes_;
    std::string path_;
    std::vector<std::string_view> sds_;  // into bytes_
    std::vector<std::uint64_t> offsets_;
    std::vector<std::string> tombstones_;
};

// Replaces `<layer_dir>/winlayer.meta` atomically (temporary file + rename, synced).
void write_meta(const std::string& layer_dir, const LayerMeta& meta, const std::string& tar_split);

}  // namespace winlayer::portable
