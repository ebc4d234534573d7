// The per-layer metadata file, `<layer>/winlayer.meta`: what a plain filesystem cannot
// hold about a Windows layer (attributes, security descriptors, the four times, EAs,
// reparse data, alternate streams, hard-link groups, tombstones) plus the tar-split record
// of the imported tar. The format is versioned and checksummed; docs/ARCHITECTURE.md
// ("Portable backend") describes it byte by byte. Reading anything else is StoreCorrupt.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../core/layer.hpp"
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

// FILETIME (100 ns ticks since 1601) <-> Unix nanoseconds.
constexpr std::int64_t kFiletimeUnixEpoch = 116444736000000000;
inline std::int64_t filetime_to_unix_ns(std::int64_t ft) { return (ft - kFiletimeUnixEpoch) * 100; }
inline std::int64_t unix_ns_to_filetime(std::int64_t ns) {
    std::int64_t ticks = ns / 100 - (ns % 100 < 0 ? 1 : 0);
    return ticks + kFiletimeUnixEpoch;
}

// Serializes `meta` and `tar_split` into the file format.
std::string encode_meta(const LayerMeta& meta, const std::string& tar_split);
// The same, written to `file` piece by piece (no copy of the tar-split record).
void write_meta_to(File& file, const LayerMeta& meta, const std::string& tar_split);
// Parses a metadata file's bytes; `path` names it in errors. Throws Error(StoreCorrupt).
LayerMeta decode_meta(const std::string& bytes, const std::string& path);
std::string decode_tar_split(const std::string& bytes, const std::string& path);

// Reads `<layer_dir>/winlayer.meta`. A missing file is StoreCorrupt too: every layer has one.
LayerMeta read_meta(const std::string& layer_dir);
std::string read_tar_split(const std::string& layer_dir);
// Replaces `<layer_dir>/winlayer.meta` atomically (temporary file + rename, synced).
void write_meta(const std::string& layer_dir, const LayerMeta& meta, const std::string& tar_split);

}  // namespace winlayer::portable
