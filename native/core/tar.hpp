// The generic tar codec: a streaming reader and a deterministic PAX writer. It knows
// tar formats, not Windows: layer_tar.cpp maps TarHeader <-> LayerEntry.
//
// Reader, formats accepted:
//   - ustar and pre-POSIX (v7, GNU "ustar  ") headers; checksums stored unsigned or signed;
//     numeric fields in octal (NUL/space terminated) or base-256 (GNU binary, high bit set);
//   - PAX per-file 'x' headers: every record kept in order as raw bytes (TarHeader::pax);
//     path, linkpath, size, mtime, atime, ctime, uid, gid, uname, gname override the
//     ustar fields; times may be fractional ("-1.25" is kept as sec -2, nsec 750000000);
//   - PAX global 'g' headers: records kept (TarReader::global_records; a later record
//     replaces the value of an earlier one with the same key, an empty value removes it),
//     mtime/atime/ctime/uid/gid/uname/gname act as defaults for later entries; a global
//     path, linkpath or size is rejected (it would rename or resize every later entry);
//   - GNU long name 'L' and long link name 'K'; several extension headers before one
//     entry are merged (PAX wins over GNU, GNU over ustar name/prefix);
//   - names other readers could take: a header names its entry by the ustar name field
//     (all that a v7 reader sees), prefix/name (ustar magic only), a GNU 'L' name and PAX
//     path records (every one of them, not only the last), and a link by the ustar link
//     field, a GNU 'K' name and PAX linkpath records. Readers differ in which wins (Go
//     takes GNU names over PAX, Python the extension header read last), and an original
//     export hands them the same bytes, so an entry is refused when the name used is safe
//     and an alternative is "unsafe": absolute ('/', '\\', so UNC too, or a drive letter
//     "C:") or with a '..' component ('/' and '\\' both separate). (An unsafe name used is
//     the path rules' to refuse.) That rule holds for names and hard-link targets. Writers put truncated or placeholder names beside
//     long ones (Go, GNU tar, Python); those are prefixes of a safe name, hence safe
//     (unless the cut leaves ".." as the last name, which a reader of that field alone
//     would take as the parent: refused too; TarWriter cuts one character shorter). A
//     symlink's target may be relative with '..' or absolute: an alternative must agree
//     with the used target in being absolute or relative, and may lead outside the
//     archive's root (resolved lexically from the entry's folder) only if the used one
//     does. Its ustar field may also hold the used target as writers render it in ASCII
//     (cut short, non-ASCII characters as '?' or '_' or dropped: Go makes "/x" of a
//     relative target whose first folder's name is all non-ASCII): that is no other target than the one used, which may itself be absolute.
//   - entry types: '0' and '\0' (regular file, reported as '0'), '7' (contiguous file,
//     reported as '0' like GNU tar and Go do), '1' hard link, '2' symlink, '5' directory.
//     Everything else is rejected: devices '3'/'4', FIFO '6', GNU sparse 'S' and PAX
//     GNU.sparse.* records, GNU 'D'/'M'/'N'/'V', unknown vendor types. A Windows layer
//     has no use for them and a hostile one would be extracted wrongly.
//   - The archive ends with a zero block (the second zero block may be missing, as GNU tar
//     and Go accept). Any bytes after it are consumed (hashed and recorded), not parsed.
//     A stream that ends before the end-of-archive block is an error (truncated layer),
//     unless accept_missing_end() was called and it ends right after an entry.
//     With a TarSplitWriter, more than kMaxTrailingData non-zero trailing bytes are refused.
// Types '1', '2', '5' carry no payload whatever their size field says (as in Go and
// Python's tarfile); their TarHeader::size is 0.
//
// Every byte consumed is hashed (diff_id()) and, with a TarSplitWriter, every byte that is
// not file payload is recorded for a byte-exact rebuild. Memory is bounded: one read
// buffer, the extension headers of one entry and the global records (kMaxExtensionSize
// each), plus the tar-split record when one is kept.
//
// Every malformed input throws Error::invalid_layer(message, entry, offset): entry is the
// entry's name (or the best guess so far, e.g. the raw ustar name), offset the byte
// offset in the uncompressed stream of the faulty header block, record or missing byte.
//
// Writer: deterministic PAX (same calls -> same bytes). A PAX 'x' header is written only
// when needed: a name or link name that is not ASCII or longer than the ustar field, a
// size or time that ustar cannot hold (the ustar field then holds base-256), a fractional
// time, atime/ctime, or extra records (e.g. MSWINDOWS.*). PAX keys are sorted by byte
// value. ustar fields are canonical: the caller's mode, uid/gid 0, empty user/group names,
// "ustar\0" "00", no prefix split. finish() pads and writes two zero blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io.hpp"
#include "sha256.hpp"
#include "sha256_worker.hpp"

namespace winlayer {

class TarSplitWriter;

constexpr std::size_t kTarBlockSize = 512;
// Largest PAX or GNU long-name header accepted: security descriptors and extended
// attributes fit many times over; a bigger one is hostile (it would be held in memory).
constexpr std::uint64_t kMaxExtensionSize = std::uint64_t(1) << 20;
// Non-zero bytes after the end-of-archive blocks accepted while recording tar-split (the
// record holds them in memory); zero padding of any length is fine.
constexpr std::uint64_t kMaxTrailingData = std::uint64_t(1) << 20;

namespace tar_type {
constexpr char kFile = '0';
constexpr char kHardLink = '1';
constexpr char kSymlink = '2';
constexpr char kDirectory = '5';
}  // namespace tar_type

// A PAX record as it was in the archive: raw key and value bytes (values may be binary).
struct PaxRecord {
    std::string key;
    std::string value;

    bool operator==(const PaxRecord& o) const { return key == o.key && value == o.value; }
};

// Seconds since the Unix epoch plus nanoseconds (0..999,999,999, always positive:
// -0.5 s is sec -1, nsec 500000000).
struct TarTime {
    std::int64_t sec = 0;
    std::uint32_t nsec = 0;

    bool operator==(const TarTime& o) const { return sec == o.sec && nsec == o.nsec; }
    bool operator!=(const TarTime& o) const { return !(*this == o); }
};

// Formats a time as a PAX value: "sec" or "sec.fraction" with trailing zeros trimmed.
std::string format_pax_time(const TarTime& t);
// Parses a PAX time value, "[+-]sec[.fraction]" (an empty fraction is 0, fraction digits
// past nanoseconds are dropped); false when it is malformed or out of range.
bool parse_pax_time(const std::string& value, TarTime& out);

struct TarHeader {
    std::string name;      // final: PAX path > GNU 'L' > ustar prefix/name
    std::string linkname;  // final: PAX linkpath > GNU 'K' > ustar linkname
    char type = tar_type::kFile;  // one of tar_type::*
    std::uint64_t size = 0;       // payload bytes (0 for header-only types)
    std::uint32_t mode = 0;       // permission and type bits as stored (07777 | S_IF*)
    std::int64_t uid = 0;
    std::int64_t gid = 0;
    std::string uname;
    std::string gname;
    TarTime mtime;
    std::optional<TarTime> atime;
    std::optional<TarTime> ctime;
    // The entry's PAX 'x' records in archive order, all of them, including those that
    // override fields above. For the writer: extra records only (see TarWriter::add).
    std::vector<PaxRecord> pax;

    // Reader only: byte offset of the entry's first header block (its PAX or GNU
    // extension header, if any), of its ustar header, and of its payload.
    std::uint64_t offset = 0;
    std::uint64_t header_offset = 0;
    std::uint64_t data_offset = 0;

    // The value of the last PAX record named `key`, if any.
    const std::string* find_pax(const std::string& key) const;
};

class TarReader {
public:
    // `split`, when given, receives every non-payload byte and the payload markers.
    explicit TarReader(Source& source, TarSplitWriter* split = nullptr,
                       std::size_t buffer_size = std::size_t(1) << 20);
    ~TarReader();
    TarReader(const TarReader&) = delete;
    TarReader& operator=(const TarReader&) = delete;

    // Lets the stream end right after an entry (at a header boundary) without the
    // end-of-archive block, as Go's reader allows and some writers (umoci) do. Such a stream
    // cannot be told from one cut short at an entry boundary: only for a caller that checks
    // diff_id() against a digest it trusts before using what it read.
    void accept_missing_end() { missing_end_ok_ = true; }

    // Hashes on a thread of its own (Sha256Worker) rather than on the reading thread, for
    // a caller with a core to spare and little else to do per byte (a listing). Call it
    // before the first next().
    void hash_in_background();

    // Skips what is left of the current payload and reads the next entry into `header`.
    // Returns false at the end of the archive, after consuming the rest of the stream
    // (diff_id() is then final and the tar-split record complete).
    bool next(TarHeader& header);

    // Reads up to n bytes of the current entry's payload; 0 at its end.
    std::size_t read(std::uint8_t* buf, std::size_t n);
    // Zero-copy variant: points `data` at up to `max` payload bytes inside the reader's
    // buffer (valid until the next call on the reader) and returns their count; 0 at end.
    std::size_t read_view(const std::uint8_t*& data, std::size_t max = SIZE_MAX);
    // Skips the rest of the current payload (next() does it too).
    void skip();
    // Payload bytes of the current entry not read yet.
    std::uint64_t remaining() const { return remaining_; }

    // Bytes consumed from the source so far (= the offset of the next unread byte).
    std::uint64_t offset() const { return offset_; }
    // PAX global records in effect, one per key (a key set again moves to the end).
    const std::vector<PaxRecord>& global_records() const { return globals_; }
    // "sha256:<hex>" of every byte of the stream: valid once next() has returned false.
    std::string diff_id() const;
    // The name of the entry being read (for errors raised by the caller about it).
    const std::string& current_name() const { return current_name_; }

private:
    struct Pending;
    std::size_t pull(std::uint8_t* buf, std::size_t n);
    bool fill(std::size_t min_bytes);
    std::size_t available() const;
    const std::uint8_t* take(std::size_t n, bool payload);
    void consume_raw(std::uint64_t n, const std::string& entry, const char* what);
    std::string read_extension(std::uint64_t size, std::uint64_t header_at,
                               const std::string& entry_guess, const char* what);
    void parse_pax(const std::string& data, std::uint64_t data_at, const std::string& entry_guess,
                   std::vector<PaxRecord>& out);
    void build_header(const std::uint8_t* block, std::uint64_t header_at,
                      const std::string& guess, Pending& pending, TarHeader& h);
    void check_alternative_names(const std::uint8_t* block, bool posix, const Pending& pending,
                                 const TarHeader& h);
    std::string peek_name();
    void set_global(PaxRecord r, const std::string& entry, std::uint64_t header_at);
    void finish_stream();

    Source& source_;
    TarSplitWriter* split_;
    Sha256 hash_;
    std::unique_ptr<Sha256Worker> worker_;  // hashes instead of hash_ when set
    IoBuffer buffer_;
    std::size_t capacity_;
    std::size_t pos_ = 0;
    std::size_t end_ = 0;
    std::uint64_t offset_ = 0;
    std::uint64_t remaining_ = 0;  // payload bytes left in the current entry
    std::uint64_t padding_ = 0;    // padding after the current payload
    std::uint64_t entry_index_ = 0;
    bool done_ = false;
    bool missing_end_ok_ = false;
    std::string current_name_;
    std::vector<PaxRecord> globals_;
    std::uint64_t globals_bytes_ = 0;
};

class TarWriter {
public:
    explicit TarWriter(Sink& out);

    // Writes the headers of an entry; for type '0' exactly header.size payload bytes must
    // follow through write(). Uses name, linkname, type, size, mode, mtime, atime, ctime
    // and pax (extra records: keys the writer derives from fields - path, linkpath, size,
    // mtime, atime, ctime, uid, gid, uname, gname - are refused, as are keys with '=' or
    // NUL and empty keys). uid/gid/uname/gname are ignored (always 0 / empty). Throws
    // InvalidArgument for a name with NUL, an empty name, a payload on a header-only type,
    // or when the previous entry's payload is incomplete.
    void add(const TarHeader& header);
    void write(const std::uint8_t* data, std::size_t n);
    // Pads the last payload and writes the end-of-archive blocks. Call exactly once.
    void finish();
    std::uint64_t bytes_written() const { return written_; }

private:
    void emit(const std::uint8_t* data, std::size_t n);
    void close_entry();

    Sink& out_;
    std::uint64_t written_ = 0;
    std::uint64_t remaining_ = 0;
    std::uint64_t padding_ = 0;
    std::string current_;
    bool finished_ = false;
};

}  // namespace winlayer
