// The Windows layer model shared by the tar codec and every backend: a layer is a
// sequence of LayerEntry values (what go-winio's backuptar calls name + file info +
// backup stream), fed to a LayerWriter on import and pulled from a LayerReader on export.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io.hpp"

namespace winlayer {

// Windows FILETIME units: 100 ns ticks since 1601-01-01 UTC.
struct FileTimes {
    std::int64_t creation = 0;
    std::int64_t last_access = 0;
    std::int64_t last_write = 0;
    std::int64_t change = 0;

    bool operator==(const FileTimes& o) const {
        return creation == o.creation && last_access == o.last_access &&
               last_write == o.last_write && change == o.change;
    }
};

enum class EntryType : std::uint8_t {
    Directory,
    File,
    Symlink,          // reparse point: symlink or, with mount_point, junction
    AlternateStream,  // path is "<file>:<stream>"; data follows like a file's
    HardLink,         // link_target names the first path of the group
    Whiteout,         // path names what this layer deletes from its parents
};

struct LayerEntry {
    std::string path;  // layer-relative, '/'-separated, as in the tar: "Files/Windows/win.ini"
    EntryType type = EntryType::File;
    std::uint32_t attributes = 0;       // FILE_ATTRIBUTE_* bits
    FileTimes times;
    std::string security_descriptor;    // self-relative SECURITY_DESCRIPTOR bytes, may be empty
    std::vector<std::pair<std::string, std::string>> extended_attributes;  // name, raw value
    std::string reparse_data;           // raw REPARSE_DATA_BUFFER (Symlink)
    std::string link_target;            // HardLink: target path; Symlink: print name ('\' separated)
    bool mount_point = false;           // Symlink that is a junction
    std::uint64_t size = 0;             // bytes of data that follow (File, AlternateStream)
};

// What an import learned besides the entries, handed over at commit.
struct CommitInfo {
    std::string diff_id;    // "sha256:<hex>" of the uncompressed tar
    std::uint64_t size = 0; // bytes of file data (main and alternate streams)
    std::string tar_split;  // record of every non-payload byte, for byte-exact rebuild
                            // (empty when the writer took it as a stream: tar_split_sink)
    // The caller's files for the layer's folder (name, bytes), e.g. a graph driver's
    // records: a backend whose publishes_layer_files() is true writes them with the layer,
    // so that they are as durable as it and appear with it; others ignore them.
    std::vector<std::pair<std::string, std::string>> layer_files;
};

// Receives one layer's entries in tar order. write() carries the data of the last
// File or AlternateStream entry passed to add(). Nothing is visible as a layer before
// commit(); abort() (or destruction without commit) leaves nothing behind.
class LayerWriter {
public:
    virtual ~LayerWriter() = default;
    virtual void add(const LayerEntry& entry) = 0;
    virtual void write(const std::uint8_t* data, std::size_t n) = 0;
    // A hard link; the target is in this layer or in a parent layer.
    virtual void add_link(const std::string& path, const std::string& target) = 0;
    // A whiteout: `path` existed in a parent and is deleted by this layer.
    virtual void remove(const std::string& path) = 0;
    // Where the tar-split record may stream while the tar is read, asked once before the
    // first entry: a writer that stores the record returns a sink and is then handed no
    // CommitInfo::tar_split; nullptr (the default): the record comes whole at commit.
    virtual Sink* tar_split_sink() { return nullptr; }
    virtual void commit(const CommitInfo& info) = 0;
    virtual void abort() noexcept = 0;
};

// Yields a layer's entries in canonical export order (directories before their
// children, lexical byte order, a file's alternate streams right after it).
class LayerReader {
public:
    virtual ~LayerReader() = default;
    // Fills `entry` and returns true, or returns false at the end.
    virtual bool next(LayerEntry& entry) = 0;
    // Data of the current File or AlternateStream entry; 0 at its end.
    virtual std::size_t read(std::uint8_t* buf, std::size_t n) = 0;
};

// Gives back the stored payload of a tar entry, for rebuilding the original tar.
class PayloadStore {
public:
    virtual ~PayloadStore() = default;
    virtual std::unique_ptr<Source> open(const std::string& entry_name, std::uint64_t size) = 0;
};

}  // namespace winlayer
