// The Win32 backup stream (what BackupRead produces and BackupWrite consumes), encoded
// and decoded in portable code, plus the payload formats it carries: extended attributes
// (FILE_FULL_EA_INFORMATION) and reparse points (REPARSE_DATA_BUFFER for symlinks and
// junctions). Format facts: REFERENCE.md section 3.
//
// A backup stream is a sequence of records, back to back, no alignment:
//   u32 stream id, u32 attributes, u64 size, u32 name size in bytes   (20 bytes, LE)
//   name (UTF-16LE, no NUL; ":name:$DATA" for an alternate data stream)
//   `size` payload bytes
//
// Users:
//   - the Windows layer writer turns each LayerEntry (+ its data) into BackupWrite input
//     with BackupStreamEncoder: begin(file entry) writes the SECURITY, EA and REPARSE
//     records and the DATA header; the data is then passed through write() unchanged;
//     begin(alternate-stream entry) adds an ALTERNATE_DATA record to the same stream.
//   - the Windows layer reader feeds BackupRead output to BackupStreamDecoder, whose
//     handler receives the security descriptor, EAs, reparse data and each data stream
//     (sparse streams made dense: holes become zeros).
// The HCS staging file format (4-byte little-endian attributes, then the backup
// stream) is the Windows backend's: this module only knows the stream itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io.hpp"
#include "layer.hpp"

namespace winlayer {

namespace backup_id {
constexpr std::uint32_t kData = 1;
constexpr std::uint32_t kEa = 2;
constexpr std::uint32_t kSecurity = 3;
constexpr std::uint32_t kAlternateData = 4;
constexpr std::uint32_t kLink = 5;
constexpr std::uint32_t kProperty = 6;
constexpr std::uint32_t kObjectId = 7;
constexpr std::uint32_t kReparse = 8;
constexpr std::uint32_t kSparseBlock = 9;
constexpr std::uint32_t kTxfs = 10;
}  // namespace backup_id

namespace backup_attr {
constexpr std::uint32_t kNormal = 0;
constexpr std::uint32_t kModifiedWhenRead = 1;
constexpr std::uint32_t kContainsSecurity = 2;
constexpr std::uint32_t kContainsProperties = 4;
constexpr std::uint32_t kSparse = 8;
}  // namespace backup_attr

constexpr std::size_t kBackupHeaderSize = 20;
// Largest SECURITY, EA or REPARSE payload accepted by the decoder (they are held in
// memory). Windows caps each at 64 KiB; anything near this is hostile.
constexpr std::uint64_t kMaxBackupMetadata = std::uint64_t(1) << 20;
// Largest stream name accepted (bytes of UTF-16).
constexpr std::uint32_t kMaxBackupNameBytes = 1024;

constexpr std::uint32_t kReparseTagMountPoint = 0xA0000003;
constexpr std::uint32_t kReparseTagSymlink = 0xA000000C;
constexpr std::uint32_t kSymlinkFlagRelative = 1;
// MAXIMUM_REPARSE_DATA_BUFFER_SIZE
constexpr std::size_t kMaxReparseData = 16 * 1024;

using ExtendedAttributes = std::vector<std::pair<std::string, std::string>>;

// Appends one record header (20 bytes + the UTF-16LE form of `name`). Throws
// InvalidArgument for a name that is not UTF-8 or too long.
void append_backup_header(std::string& out, std::uint32_t id, std::uint32_t attributes,
                          std::uint64_t size, const std::string& name = {});

// FILE_FULL_EA_INFORMATION list: u32 next-entry offset, u8 flags, u8 name length,
// u16 value length, name, NUL, value; every entry but the last padded to 4 bytes.
// Names are 1-255 bytes without NUL, values at most 65535 bytes (else InvalidArgument).
// Flags are written as 0 (the tar format cannot carry them).
std::string encode_extended_attributes(const ExtendedAttributes& eas);
// Strict, bounds-checked; flags are dropped. Throws InvalidLayer (offset = byte offset
// inside `data`) for a malformed list. An empty input is an empty list.
ExtendedAttributes decode_extended_attributes(const std::string& data);

// A symlink or junction target as the tar carries it (the print name).
struct ReparsePoint {
    std::string target;        // '\'-separated print name (UTF-8)
    bool mount_point = false;  // junction (IO_REPARSE_TAG_MOUNT_POINT)
    bool relative = false;     // symlink with SYMLINK_FLAG_RELATIVE
};

// REPARSE_DATA_BUFFER for a symlink (0xA000000C) or, with mount_point, a junction
// (0xA0000003). The substitute name is the NT form of the target: `\??\C:\x` for a
// drive path, `\??\UNC\srv\share` for `\\srv\share`, `\??\...` for `\\?\...`; any other
// target is relative (symlinks only: the relative flag is set) and kept as is. The
// print name is the target. Both names are NUL-terminated in the buffer but counted
// without the NUL. Throws InvalidArgument for an empty target, a NUL, a relative
// junction or a buffer over 16 KiB.
std::string encode_reparse_point(const std::string& target, bool mount_point);
// Inverse of encode_reparse_point for symlinks and junctions: the print name, or when
// it is empty the substitute name with its NT prefix undone. Any other reparse tag, or a
// malformed buffer, throws InvalidLayer (offset = byte offset inside `data`).
ReparsePoint decode_reparse_point(const std::string& data);

// Writes the backup stream of one file or directory, incrementally, to a Sink.
class BackupStreamEncoder {
public:
    explicit BackupStreamEncoder(Sink& out) : out_(out) {}

    // Starts an entry.
    //   Directory, File, Symlink: SECURITY (attribute kContainsSecurity) when
    //     security_descriptor is set, EA when extended_attributes is not empty, REPARSE
    //     for a Symlink (reparse_data if set, else built from link_target/mount_point);
    //     for a File also the DATA header: exactly entry.size bytes must follow.
    //   AlternateStream: the ALTERNATE_DATA header ":<stream>:$DATA", <stream> being the
    //     part of entry.path after the last ':'; exactly entry.size bytes must follow.
    // HardLink and Whiteout entries have no backup stream (InvalidArgument).
    // Throws InvalidArgument when the previous data stream is not complete.
    void begin(const LayerEntry& entry);
    // Data of the current stream, passed through unchanged.
    void write(const std::uint8_t* data, std::size_t n);
    // Checks that the current data stream is complete (call at the end of a file).
    void finish();
    // Bytes of data the current stream still expects.
    std::uint64_t remaining() const { return remaining_; }

private:
    Sink& out_;
    std::uint64_t remaining_ = 0;
    std::string scratch_;
};

// Receives what a backup stream holds, in stream order. Default: ignore.
class BackupStreamHandler {
public:
    virtual ~BackupStreamHandler() = default;
    virtual void security(std::string /*descriptor*/) {}
    virtual void extended_attributes(ExtendedAttributes /*eas*/) {}
    virtual void reparse(std::string /*reparse_data*/) {}
    // A data stream starts: `stream` is "" for the file's main data, else the alternate
    // stream's name (without ':' and ":$DATA"). `size` is its length, or kUnknownSize
    // for a sparse stream, whose length is known only at end_data().
    virtual void begin_data(const std::string& /*stream*/, std::uint64_t /*size*/) {}
    // Dense bytes of the current data stream (holes of sparse streams come as zeros).
    virtual void data(const std::uint8_t* /*bytes*/, std::size_t /*n*/) {}
    virtual void end_data(std::uint64_t /*size*/) {}

    static constexpr std::uint64_t kUnknownSize = UINT64_MAX;
};

// Parses BackupRead output fed in chunks of any size. Memory: one header, plus one
// metadata payload (at most kMaxBackupMetadata). LINK, PROPERTY, OBJECT_ID and TXFS
// records are skipped (the layer format has no place for them). Sparse streams (a DATA
// or ALTERNATE_DATA header with kSparse) come in BackupRead's four forms: size 0 and
// nothing after it (an empty file); size 0, then SPARSE_BLOCK records (i64 offset + data,
// offsets increasing; a block of size 8 whose offset is the stream's size ends it: the
// only block of a file without allocated ranges); or, for one allocated range, the data
// inline in the header like a dense stream, and then no blocks (a block there is an error).
// Malformed input throws InvalidLayer with `label` as the entry and the byte offset
// inside the backup stream.
class BackupStreamDecoder {
public:
    explicit BackupStreamDecoder(BackupStreamHandler& handler, std::string label = {})
        : handler_(handler), label_(std::move(label)) {}

    // Sparse streams end up at most this long (the file's size, which the caller knows
    // from the file system): a block offset past it is an error, not a run of zeros.
    void set_sparse_limit(std::uint64_t max_size) { sparse_limit_ = max_size; }

    void feed(const std::uint8_t* data, std::size_t n);
    // The stream has ended: throws if it ended inside a record.
    void finish();
    std::uint64_t offset() const { return offset_; }

private:
    enum class State { Header, Name, Payload };
    enum class Kind { Metadata, Data, SparseMarker, SparseOffset, SparseData, Skip };

    [[noreturn]] void fail(const std::string& message, std::uint64_t at) const;
    void start_record();
    void end_record();
    void end_sparse();
    void emit_zeros(std::uint64_t count);

    BackupStreamHandler& handler_;
    std::string label_;
    std::uint64_t offset_ = 0;
    State state_ = State::Header;
    std::uint8_t header_[kBackupHeaderSize] = {};
    std::size_t have_ = 0;
    std::uint32_t id_ = 0;
    std::uint32_t attributes_ = 0;
    std::uint64_t size_ = 0;
    std::uint32_t name_size_ = 0;
    std::uint64_t record_at_ = 0;
    std::string buffer_;  // the name, a metadata payload or a sparse block's offset
    Kind kind_ = Kind::Skip;
    std::uint64_t left_ = 0;  // payload bytes left in the current record
    bool sparse_open_ = false;
    std::uint64_t sparse_pos_ = 0;
    std::uint64_t sparse_limit_ = UINT64_MAX;
};

}  // namespace winlayer
