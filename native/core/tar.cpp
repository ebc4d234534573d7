#include "tar.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "encoding.hpp"
#include "error.hpp"
#include "tar_split.hpp"

namespace winlayer {

namespace {

// ustar header layout (offset, length).
struct Field {
    std::size_t at, len;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12},
    kMtime{136, 12}, kChecksum{148, 8}, kLinkname{157, 100}, kMagic{257, 6}, kVersion{263, 2},
    kUname{265, 32}, kGname{297, 32}, kDevMajor{329, 8}, kDevMinor{337, 8}, kPrefix{345, 155},
    kGnuAtime{345, 12}, kGnuCtime{357, 12};
constexpr std::size_t kTypeflag = 156;

constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();

std::uint64_t padding_for(std::uint64_t size) {
    return (kTarBlockSize - size % kTarBlockSize) % kTarBlockSize;
}

[[noreturn]] void fail(const std::string& message, const std::string& entry, std::uint64_t offset) {
    throw Error::invalid_layer(message, entry, static_cast<std::int64_t>(offset));
}

// A NUL-terminated (or full-width) string field.
std::string field_string(const std::uint8_t* block, Field f) {
    const char* p = reinterpret_cast<const char*>(block + f.at);
    return std::string(p, strnlen(p, f.len));
}

bool is_zero_block(const std::uint8_t* block) {
    static const std::uint8_t zeros[kTarBlockSize] = {};
    return std::memcmp(block, zeros, kTarBlockSize) == 0;
}

// Octal (space/NUL padded on either side) or GNU base-256 (high bit of the first byte
// set; 0xff first byte for negative values, two's complement).
std::int64_t parse_numeric(const std::uint8_t* block, Field f, const char* what,
                           const std::string& entry, std::uint64_t header_at) {
    const std::uint8_t* p = block + f.at;
    auto bad = [&](const char* why) -> std::int64_t {
        fail(std::string(why) + " " + what + " field in tar header", entry, header_at);
    };
    if (p[0] & 0x80) {
        const bool negative = p[0] == 0xff;
        if (!negative && p[0] != 0x80) return bad("malformed base-256");
        // Value bits beyond the low 63 must all equal the sign.
        std::uint64_t value = 0;
        for (std::size_t i = 0; i < f.len; ++i) {
            std::uint8_t c = i == 0 ? (negative ? 0xff : 0x00) : p[i];
            if (negative) c = static_cast<std::uint8_t>(~c);
            if (value >> 55) return bad("out-of-range");
            value = (value << 8) | c;
        }
        if (value > static_cast<std::uint64_t>(kMaxInt64)) return bad("out-of-range");
        return negative ? -static_cast<std::int64_t>(value) - 1 : static_cast<std::int64_t>(value);
    }
    std::size_t i = 0, end = f.len;
    while (i < end && (p[i] == ' ' || p[i] == 0)) ++i;
    while (end > i && (p[end - 1] == ' ' || p[end - 1] == 0)) --end;
    std::uint64_t value = 0;
    for (; i < end; ++i) {
        if (p[i] < '0' || p[i] > '7') return bad("invalid");
        if (value >> 60) return bad("out-of-range");
        value = value * 8 + (p[i] - '0');
    }
    if (value > static_cast<std::uint64_t>(kMaxInt64)) return bad("out-of-range");
    return static_cast<std::int64_t>(value);
}

// The sum of the header with its checksum field read as spaces; old writers summed signed
// chars, so that form is accepted too (computed only when the usual one fails).
bool checksum_ok(const std::uint8_t* block, std::int64_t stored) {
    std::int64_t sum = 8 * ' ';
    for (std::size_t i = 0; i < kTarBlockSize; ++i) sum += block[i];
    for (std::size_t i = 0; i < kChecksum.len; ++i) sum -= block[kChecksum.at + i];
    if (stored == sum) return true;
    std::int64_t signed_sum = 8 * ' ';
    for (std::size_t i = 0; i < kTarBlockSize; ++i) signed_sum += static_cast<std::int8_t>(block[i]);
    for (std::size_t i = 0; i < kChecksum.len; ++i)
        signed_sum -= static_cast<std::int8_t>(block[kChecksum.at + i]);
    return stored == signed_sum;
}

const char* type_description(char type) {
    switch (type) {
    case '3': return "character device";
    case '4': return "block device";
    case '6': return "FIFO";
    case 'S': return "GNU sparse file";
    case 'D': return "GNU dump directory";
    case 'M': return "GNU multi-volume continuation";
    case 'N': return "GNU old long name";
    case 'V': return "GNU volume label";
    default: return "unknown type";
    }
}

std::string printable_type(char type) {
    if (type >= 0x21 && type < 0x7f) return std::string("'") + type + "'";
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned>(static_cast<std::uint8_t>(type)));
    return buf;
}

// Decimal without sign, for PAX size/uid/gid.
bool parse_decimal(const std::string& v, std::int64_t& out) {
    if (v.empty() || v.size() > 19) return false;
    std::uint64_t value = 0;
    for (char c : v) {
        if (c < '0' || c > '9') return false;
        value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (value > static_cast<std::uint64_t>(kMaxInt64)) return false;
    out = static_cast<std::int64_t>(value);
    return true;
}

}  // namespace

// "[+-]sec[.fraction]", as Go's parsePAXTime reads it ("+5" and "5." are 5); digits of
// the fraction past nanoseconds are dropped (the exact text stays in the PAX records).
bool parse_pax_time(const std::string& v, TarTime& out) {
    std::size_t i = 0;
    const bool negative = !v.empty() && v[0] == '-';
    if (negative || (!v.empty() && v[0] == '+')) ++i;
    const std::size_t dot = v.find('.', i);
    std::int64_t whole;
    if (!parse_decimal(v.substr(i, dot == std::string::npos ? std::string::npos : dot - i), whole))
        return false;
    std::uint32_t nsec = 0;
    if (dot != std::string::npos) {
        std::uint32_t scale = 100000000;
        for (std::size_t k = dot + 1; k < v.size(); ++k) {
            if (v[k] < '0' || v[k] > '9') return false;
            nsec += static_cast<std::uint32_t>(v[k] - '0') * scale;
            scale /= 10;
        }
    }
    if (!negative) {
        out = TarTime{whole, nsec};
    } else if (nsec == 0) {
        out = TarTime{-whole, 0};
    } else {
        out = TarTime{-whole - 1, 1000000000u - nsec};
    }
    return true;
}

namespace {

// Keys whose meaning the reader applies (and the writer derives from TarHeader fields).
bool is_field_key(const std::string& key) {
    return key == "path" || key == "linkpath" || key == "size" || key == "mtime" ||
           key == "atime" || key == "ctime" || key == "uid" || key == "gid" || key == "uname" ||
           key == "gname";
}

}  // namespace

std::string format_pax_time(const TarTime& t) {
    if (t.nsec == 0) return std::to_string(t.sec);
    std::string whole;
    std::uint32_t frac;
    if (t.sec < 0) {
        // sec + nsec/1e9 is negative: print -(|sec + 1|).(1e9 - nsec)
        whole = "-" + std::to_string(-(t.sec + 1));
        frac = 1000000000u - t.nsec;
    } else {
        whole = std::to_string(t.sec);
        frac = t.nsec;
    }
    char digits[10];
    std::snprintf(digits, sizeof digits, "%09u", static_cast<unsigned>(frac));
    std::string f(digits);
    f.erase(f.find_last_not_of('0') + 1);
    return whole + "." + f;
}

const std::string* TarHeader::find_pax(const std::string& key) const {
    for (auto it = pax.rbegin(); it != pax.rend(); ++it)
        if (it->key == key) return &it->value;
    return nullptr;
}

// ---------------------------------------------------------------------------------------
// Reader

// What the extension headers before an entry said.
struct TarReader::Pending {
    std::uint64_t start = 0;
    bool any = false;
    bool has_long_name = false, has_long_link = false;
    std::string long_name, long_link;
    std::vector<PaxRecord> pax;
    std::uint64_t bytes = 0;  // extension data read for this entry
};

TarReader::TarReader(Source& source, TarSplitWriter* split, std::size_t buffer_size)
    : source_(source),
      split_(split),
      buffer_(make_io_buffer(std::max(buffer_size, kTarBlockSize))),
      capacity_(std::max(buffer_size, kTarBlockSize)) {}

TarReader::~TarReader() = default;

void TarReader::hash_in_background() {
    if (offset_ != 0 || end_ != 0) throw std::logic_error("hash_in_background() after the first read");
    worker_ = std::make_unique<Sha256Worker>();
}

std::string TarReader::diff_id() const { return worker_ ? worker_->oci_digest() : hash_.oci_digest(); }

std::size_t TarReader::pull(std::uint8_t* buf, std::size_t n) {
    std::size_t got = source_.read(buf, n);
    if (worker_)
        worker_->update(buf, got);
    else
        hash_.update(buf, got);
    return got;
}

bool TarReader::fill(std::size_t min_bytes) {
    if (end_ - pos_ >= min_bytes) return true;
    if (capacity_ - pos_ < min_bytes) {
        std::memmove(buffer_.get(), buffer_.get() + pos_, end_ - pos_);
        end_ -= pos_;
        pos_ = 0;
    }
    while (end_ - pos_ < min_bytes) {
        std::size_t got = pull(buffer_.get() + end_, capacity_ - end_);
        if (got == 0) return false;
        end_ += got;
    }
    return true;
}

const std::uint8_t* TarReader::take(std::size_t n, bool payload) {
    const std::uint8_t* p = buffer_.get() + pos_;
    pos_ += n;
    offset_ += n;
    if (split_ && !payload) split_->raw(p, n);
    return p;
}

std::size_t TarReader::available() const { return end_ - pos_; }

void TarReader::consume_raw(std::uint64_t n, const std::string& entry, const char* what) {
    while (n > 0) {
        if (!fill(1)) fail(std::string("truncated ") + what, entry, offset_);
        std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, available()));
        take(k, false);
        n -= k;
    }
}

std::string TarReader::read_extension(std::uint64_t size, std::uint64_t header_at,
                                      const std::string& entry_guess, const char* what) {
    if (size > kMaxExtensionSize)
        fail(std::string(what) + " of " + std::to_string(size) + " bytes exceeds the limit of " +
                 std::to_string(kMaxExtensionSize),
             entry_guess, header_at);
    std::string data;
    data.reserve(static_cast<std::size_t>(size));
    std::uint64_t left = size;
    while (left > 0) {
        if (!fill(1)) fail(std::string("truncated ") + what, entry_guess, offset_);
        std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(left, available()));
        data.append(reinterpret_cast<const char*>(take(k, false)), k);
        left -= k;
    }
    consume_raw(padding_for(size), entry_guess, what);
    return data;
}

void TarReader::parse_pax(const std::string& data, std::uint64_t data_at,
                          const std::string& entry_guess, std::vector<PaxRecord>& out) {
    std::size_t pos = 0;
    while (pos < data.size()) {
        const std::uint64_t at = data_at + pos;
        auto bad = [&](const std::string& why) { fail("malformed PAX record: " + why, entry_guess, at); };
        std::size_t space = pos;
        std::uint64_t len = 0;
        while (space < data.size() && data[space] >= '0' && data[space] <= '9' && space - pos < 20) {
            len = len * 10 + static_cast<std::uint64_t>(data[space] - '0');
            ++space;
        }
        if (space == pos || space >= data.size() || data[space] != ' ')
            bad("length is not a decimal number followed by a space");
        if (len > data.size() - pos) bad("length " + std::to_string(len) + " runs past the header");
        if (len < space - pos + 3) bad("length " + std::to_string(len) + " is too short");
        const std::size_t end = pos + static_cast<std::size_t>(len);
        if (data[end - 1] != '\n') bad("record does not end with a newline");
        const std::size_t key_at = space + 1;
        const std::size_t eq = data.find('=', key_at);
        if (eq == std::string::npos || eq >= end - 1) bad("no '=' in record");
        if (eq == key_at) bad("empty key");
        PaxRecord rec{data.substr(key_at, eq - key_at), data.substr(eq + 1, end - 1 - (eq + 1))};
        if (rec.key.find('\0') != std::string::npos) bad("NUL in key");
        if (rec.key == "path" || rec.key == "linkpath") {
            if (rec.value.find('\0') != std::string::npos) bad("NUL in " + rec.key);
            if (!is_valid_utf8(rec.value)) bad(rec.key + " is not valid UTF-8");
        }
        if (rec.key.compare(0, 11, "GNU.sparse.") == 0)
            fail("sparse files are not supported (PAX record '" + rec.key + "')", entry_guess, at);
        out.push_back(std::move(rec));
        pos = end;
    }
}

// Names other readers could take.

namespace {

bool is_separator(char c) { return c == '/' || c == '\\'; }

// Absolute for some platform's reader: rooted ('/', '\\', so UNC too) or with a drive letter.
bool is_absolute_name(std::string_view name) {
    if (!name.empty() && is_separator(name[0])) return true;
    return name.size() >= 2 && name[1] == ':' &&
           ((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z'));
}

// Calls visit(component) for each component, split at '/' and '\\' (as Windows splits).
template <typename F>
void for_each_component(std::string_view name, F&& visit) {
    std::size_t start = 0;
    for (std::size_t i = 0; i <= name.size(); ++i) {
        if (i == name.size() || is_separator(name[i])) {
            visit(name.substr(start, i - start));
            start = i + 1;
        }
    }
}

// A name no reader can resolve outside the folder it extracts into.
bool is_contained_name(std::string_view name) {
    if (is_absolute_name(name)) return false;
    bool dotdot = false;
    for_each_component(name, [&](std::string_view c) { dotdot = dotdot || c == ".."; });
    return !dotdot;
}

// Where a symlink at `entry` pointing to `target` leads, resolved lexically from the
// entry's folder: absolute, outside the archive's root, or inside it.
enum class LinkReach { Inside, Outside, Absolute };

LinkReach link_reach(std::string_view entry, std::string_view target) {
    if (is_absolute_name(target)) return LinkReach::Absolute;
    long depth = 0;
    bool outside = false;
    auto step = [&](std::string_view c) {
        if (c == "..") outside = outside || --depth < 0;
        else if (!c.empty() && c != ".") ++depth;
    };
    std::size_t cut = entry.find_last_of("/\\");
    if (cut != std::string_view::npos) for_each_component(entry.substr(0, cut), step);
    for_each_component(target, step);
    return outside ? LinkReach::Outside : LinkReach::Inside;
}

constexpr const char* kUstarLinkField = "ustar link name field";

// Whether `field` is `value` as a writer puts it in an ASCII ustar field beside the real
// value: cut short, its non-ASCII bytes kept (GNU tar), or each non-ASCII character made
// '?' (Python), each such byte '_' (TarWriter), or dropped (Go).
bool is_ascii_rendering(const std::string& field, const std::string& value) {
    for (int policy = 0; policy < 4; ++policy) {
        std::string out;
        for (std::size_t i = 0; i < value.size() && out.size() < field.size(); ++i) {
            const auto c = static_cast<unsigned char>(value[i]);
            if (c < 0x80 || policy == 0) out += static_cast<char>(c);
            else if (policy == 1 && c >= 0xc0) out += '?';  // one per lead byte
            else if (policy == 2) out += '_';
        }
        if (out == field) return true;
    }
    return false;
}

}  // namespace

// One header can name an entry (and its link target) several ways: the ustar name field
// (all that a v7 reader sees), prefix/name (ustar), a GNU long name, PAX path records.
// Readers differ in which wins (Go prefers GNU names over PAX ones, Python the header read
// last), so a name winlayer does not use still matters: the original export gives the
// same bytes to them. Writers put a truncated or placeholder ustar name beside a long
// one; that is fine, but an alternative that would escape the extraction folder where the
// name used here does not is refused (tar.hpp).
void TarReader::check_alternative_names(const std::uint8_t* block, bool posix,
                                        const Pending& pending, const TarHeader& h) {
    auto refuse = [&](const std::string& alternative, const char* source, const char* what,
                      const std::string& used) {
        fail("ambiguous entry: the " + std::string(source) + " '" + alternative + "' " + what +
                 ", unlike '" + used + "' which is used here; another tar reader may take it",
             h.name, h.offset);
    };
    // A used name that is unsafe itself is the path rules' to refuse, not a disagreement.
    const bool name_contained = is_contained_name(h.name);
    auto check_name = [&](const std::string& alternative, const char* source) {
        if (name_contained && alternative != h.name && !is_contained_name(alternative))
            refuse(alternative, source, "is absolute or has a '..' component", h.name);
    };
    const std::string ustar_name = field_string(block, kName);
    check_name(ustar_name, "ustar name field");
    if (posix) {
        const std::string prefix = field_string(block, kPrefix);
        if (!prefix.empty()) check_name(prefix + "/" + ustar_name, "ustar prefix and name");
    }
    if (pending.has_long_name) check_name(pending.long_name, "GNU long name");
    for (const auto& r : h.pax)
        if (r.key == "path" && !r.value.empty()) check_name(r.value, "PAX path");

    if (h.type != tar_type::kHardLink && h.type != tar_type::kSymlink) return;
    // A hard link names an entry of the archive: the rule for names. A symlink's target may
    // be relative with '..' or absolute: an alternative must agree with the used one in
    // that, and may lead outside the archive's root only if the used one does. The ustar
    // field may hold the ASCII rendering writers make of the target (Go's, which drops
    // non-ASCII characters, can make a relative target absolute): that is the target
    // itself, which winlayer would take as it is.
    const LinkReach used = link_reach(h.name, h.linkname);
    auto check_link = [&](const std::string& alternative, const char* source) {
        if (alternative.empty() || alternative == h.linkname) return;
        if (h.type == tar_type::kHardLink) {
            if (is_contained_name(h.linkname) && !is_contained_name(alternative))
                refuse(alternative, source, "is absolute or has a '..' component", h.linkname);
            return;
        }
        if (source == kUstarLinkField && is_ascii_rendering(alternative, h.linkname)) return;
        const LinkReach reach = link_reach(h.name, alternative);
        if ((reach == LinkReach::Absolute) != (used == LinkReach::Absolute))
            refuse(alternative, source,
                   reach == LinkReach::Absolute ? "is an absolute symlink target"
                                                : "is a relative symlink target",
                   h.linkname);
        if (reach == LinkReach::Outside && used == LinkReach::Inside)
            refuse(alternative, source, "leads outside the archive's root", h.linkname);
    };
    check_link(field_string(block, kLinkname), kUstarLinkField);
    if (pending.has_long_link) check_link(pending.long_link, "GNU long link name");
    for (const auto& r : h.pax)
        if (r.key == "linkpath") check_link(r.value, "PAX linkpath");
}

std::string TarReader::peek_name() {
    if (!fill(kTarBlockSize) || is_zero_block(buffer_.get() + pos_)) return {};
    return field_string(buffer_.get() + pos_, kName);
}

// A later global record replaces the earlier one of the same key; an empty value removes
// it (POSIX). The set is bounded like one extension header.
void TarReader::set_global(PaxRecord r, const std::string& entry, std::uint64_t header_at) {
    auto it = std::find_if(globals_.begin(), globals_.end(),
                           [&](const PaxRecord& g) { return g.key == r.key; });
    if (it != globals_.end()) {
        globals_bytes_ -= it->key.size() + it->value.size();
        globals_.erase(it);
    }
    if (r.value.empty()) return;
    globals_bytes_ += r.key.size() + r.value.size();
    if (globals_bytes_ > kMaxExtensionSize)
        fail("PAX global records exceed " + std::to_string(kMaxExtensionSize) + " bytes", entry,
             header_at);
    globals_.push_back(std::move(r));
}

void TarReader::finish_stream() {
    // Whatever follows the end-of-archive blocks is part of the stream (and its digest).
    // The tar-split record keeps it: zero runs cost nothing there, other bytes are held in
    // memory, so they are bounded.
    const std::uint64_t trailer_at = offset_;
    std::uint64_t non_zero = 0;
    for (;;) {
        if (available() == 0) {
            pos_ = end_ = 0;
            if (!fill(1)) break;
        }
        const std::size_t n = available();
        const std::uint8_t* p = take(n, false);
        if (!split_) continue;
        non_zero += static_cast<std::uint64_t>(n - static_cast<std::size_t>(std::count(p, p + n, 0)));
        if (non_zero > kMaxTrailingData)
            fail("more than " + std::to_string(kMaxTrailingData) +
                     " bytes of non-zero data after the end of the archive",
                 "", trailer_at);
    }
    done_ = true;
    if (split_) split_->finish(offset_, worker_ ? worker_->digest() : hash_.digest());
}

void TarReader::skip() {
    while (remaining_ > 0) {
        if (available() == 0) {
            pos_ = end_ = 0;
            if (!fill(1)) fail("truncated payload", current_name_, offset_);
        }
        std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, available()));
        take(k, true);
        remaining_ -= k;
    }
}

std::size_t TarReader::read(std::uint8_t* buf, std::size_t n) {
    if (remaining_ == 0 || n == 0) return 0;
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n, remaining_));
    if (available() == 0 && want >= capacity_) {
        // Large reads go straight into the caller's buffer.
        std::size_t got = pull(buf, want);
        if (got == 0) fail("truncated payload", current_name_, offset_);
        offset_ += got;
        remaining_ -= got;
        return got;
    }
    const std::uint8_t* view;
    std::size_t got = read_view(view, want);
    std::memcpy(buf, view, got);
    return got;
}

std::size_t TarReader::read_view(const std::uint8_t*& data, std::size_t max) {
    if (remaining_ == 0 || max == 0) return 0;
    if (available() == 0) {
        pos_ = end_ = 0;
        if (!fill(1)) fail("truncated payload", current_name_, offset_);
    }
    std::size_t k = std::min<std::size_t>(available(), max);
    k = static_cast<std::size_t>(std::min<std::uint64_t>(k, remaining_));
    data = take(k, true);
    remaining_ -= k;
    return k;
}

bool TarReader::next(TarHeader& h) {
    if (done_) return false;
    skip();
    if (padding_ > 0) {
        consume_raw(padding_, current_name_, "padding after payload");
        padding_ = 0;
    }

    Pending pending;
    pending.start = offset_;
    // Reuse the previous entry's record vector: its capacity saves reallocations.
    pending.pax.swap(h.pax);
    pending.pax.clear();
    std::uint8_t block[kTarBlockSize];
    for (;;) {
        const std::uint64_t header_at = offset_;
        std::string guess = pending.has_long_name ? pending.long_name : std::string();
        for (const auto& r : pending.pax)
            if (r.key == "path" && !r.value.empty()) guess = r.value;
        if (!fill(kTarBlockSize)) {
            if (missing_end_ok_ && available() == 0 && !pending.any) {
                current_name_.clear();
                finish_stream();
                return false;
            }
            const char* what = available() == 0 && !pending.any
                                   ? "truncated archive: missing end-of-archive block (a layer "
                                     "without one is accepted only with its expected digest)"
                                   : "truncated header";
            if (guess.empty()) {
                const char* p = reinterpret_cast<const char*>(buffer_.get() + pos_);
                guess.assign(p, strnlen(p, std::min(available(), kName.len)));
            }
            fail(what, guess, header_at);
        }
        std::memcpy(block, buffer_.get() + pos_, kTarBlockSize);
        if (guess.empty()) guess = field_string(block, kName);

        if (is_zero_block(block)) {
            if (pending.any) fail("extension header not followed by an entry", guess, header_at);
            take(kTarBlockSize, false);
            // A second zero block completes the end-of-archive marker; the stream may
            // also end right after the first (GNU tar and Go accept that).
            if (fill(kTarBlockSize)) {
                if (!is_zero_block(buffer_.get() + pos_))
                    fail("entry header after an end-of-archive block", "", offset_);
                take(kTarBlockSize, false);
            } else if (available() != 0) {
                fail("truncated end-of-archive block", "", offset_);
            }
            current_name_.clear();
            finish_stream();
            return false;
        }

        const std::int64_t stored_sum = parse_numeric(block, kChecksum, "checksum", guess, header_at);
        if (!checksum_ok(block, stored_sum)) fail("bad header checksum", guess, header_at);
        take(kTarBlockSize, false);

        const char type = static_cast<char>(block[kTypeflag]);
        const bool is_ext = type == 'x' || type == 'g' || type == 'L' || type == 'K';
        if (is_ext) {
            const std::int64_t size = parse_numeric(block, kSize, "size", guess, header_at);
            if (size < 0) fail("negative size field in tar header", guess, header_at);
            const std::uint64_t data_at = offset_;
            const char* what = type == 'x'   ? "PAX header"
                               : type == 'g' ? "PAX global header"
                               : type == 'L' ? "GNU long name"
                                             : "GNU long link name";
            // Many extension headers before one entry add up: bound their sum too (one
            // header over the limit is reported as such by read_extension).
            const auto ext_size = static_cast<std::uint64_t>(size);
            if (type != 'g') pending.bytes += ext_size;
            if (pending.bytes > kMaxExtensionSize && ext_size <= kMaxExtensionSize)
                fail("extension headers of one entry exceed " + std::to_string(kMaxExtensionSize) +
                         " bytes",
                     guess, header_at);
            std::string data = read_extension(ext_size, header_at, guess, what);
            // The entry this header belongs to is named by the next header, when it is
            // already buffered: a better name for errors than "././@PaxHeader".
            if (!pending.has_long_name && guess == field_string(block, kName)) {
                std::string next = peek_name();
                if (!next.empty()) guess = std::move(next);
            }
            if (type == 'g') {
                std::vector<PaxRecord> records;
                parse_pax(data, data_at, guess, records);
                for (auto& r : records) {
                    if (r.key == "path" || r.key == "linkpath" || r.key == "size")
                        fail("PAX global record '" + r.key + "' is not supported", guess, header_at);
                    set_global(std::move(r), guess, header_at);
                }
                // A global header is not part of an entry: the entry starts after it.
                if (!pending.any) pending.start = offset_;
                continue;
            }
            pending.any = true;
            if (type == 'x') {
                parse_pax(data, data_at, guess, pending.pax);
            } else {
                std::string value = data.substr(0, data.find('\0'));
                if (!is_valid_utf8(value)) fail(std::string(what) + " is not valid UTF-8", guess, header_at);
                (type == 'L' ? pending.long_name : pending.long_link) = std::move(value);
                (type == 'L' ? pending.has_long_name : pending.has_long_link) = true;
            }
            continue;
        }

        build_header(block, header_at, guess, pending, h);
        return true;
    }
}

void TarReader::build_header(const std::uint8_t* block, std::uint64_t header_at,
                             const std::string& guess, Pending& pending, TarHeader& h) {
    char type = static_cast<char>(block[kTypeflag]);
    if (type == '\0' || type == '7') type = tar_type::kFile;
    if (type != tar_type::kFile && type != tar_type::kHardLink && type != tar_type::kSymlink &&
        type != tar_type::kDirectory)
        fail("unsupported entry type " + printable_type(type) + " (" + type_description(type) + ")",
             guess, header_at);

    const bool posix = std::memcmp(block + kMagic.at, "ustar\0", 6) == 0;
    const bool gnu = std::memcmp(block + kMagic.at, "ustar ", 6) == 0;

    h = TarHeader();
    h.type = type;
    h.offset = pending.start;
    h.header_offset = header_at;
    h.pax = std::move(pending.pax);

    // Name and link: ustar fields, then GNU long names, then PAX.
    h.name = field_string(block, kName);
    if (posix) {
        std::string prefix = field_string(block, kPrefix);
        if (!prefix.empty()) h.name = prefix + "/" + h.name;
    }
    h.linkname = field_string(block, kLinkname);
    if (pending.has_long_name) h.name = pending.long_name;
    if (pending.has_long_link) h.linkname = pending.long_link;

    std::int64_t size = parse_numeric(block, kSize, "size", guess, header_at);
    if (size < 0) fail("negative size field in tar header", guess, header_at);
    const std::int64_t mode = parse_numeric(block, kMode, "mode", guess, header_at);
    if (mode < 0 || mode > 07777777) fail("out-of-range mode field in tar header", guess, header_at);
    h.mode = static_cast<std::uint32_t>(mode);
    h.uid = parse_numeric(block, kUid, "uid", guess, header_at);
    h.gid = parse_numeric(block, kGid, "gid", guess, header_at);
    h.mtime.sec = parse_numeric(block, kMtime, "mtime", guess, header_at);
    if (posix || gnu) {
        h.uname = field_string(block, kUname);
        h.gname = field_string(block, kGname);
    }
    if (gnu) {
        if (block[kGnuAtime.at] != 0)
            h.atime = TarTime{parse_numeric(block, kGnuAtime, "atime", guess, header_at), 0};
        if (block[kGnuCtime.at] != 0)
            h.ctime = TarTime{parse_numeric(block, kGnuCtime, "ctime", guess, header_at), 0};
    }

    // PAX: global defaults first, then the entry's own records (last record wins; an
    // empty value cancels the keyword, falling back to the header field).
    auto apply = [&](const PaxRecord& r, bool global) {
        const std::string& k = r.key;
        const std::string& v = r.value;
        if (v.empty()) return;
        auto bad = [&](const char* what) {
            fail(std::string("malformed PAX ") + (global ? "global " : "") + what + " '" + v + "'",
                 guess, h.offset);
        };
        std::int64_t n;
        TarTime t;
        if (k == "path") {
            h.name = v;
        } else if (k == "linkpath") {
            h.linkname = v;
        } else if (k == "size") {
            if (!parse_decimal(v, n)) bad("size");
            size = n;
        } else if (k == "uid" || k == "gid") {
            if (!parse_decimal(v, n)) bad(k == "uid" ? "uid" : "gid");
            (k == "uid" ? h.uid : h.gid) = n;
        } else if (k == "uname") {
            h.uname = v;
        } else if (k == "gname") {
            h.gname = v;
        } else if (k == "mtime" || k == "atime" || k == "ctime") {
            if (!parse_pax_time(v, t)) bad(k == "mtime" ? "mtime" : k == "atime" ? "atime" : "ctime");
            if (k == "mtime") h.mtime = t;
            else if (k == "atime") h.atime = t;
            else h.ctime = t;
        }
    };
    for (const auto& r : globals_) apply(r, true);
    for (const auto& r : h.pax) apply(r, false);

    if (h.name.empty()) fail("entry has an empty name", guess, header_at);
    if ((type == tar_type::kHardLink || type == tar_type::kSymlink) && h.linkname.empty())
        fail("link entry has an empty link target", h.name, header_at);
    check_alternative_names(block, posix, pending, h);

    h.size = type == tar_type::kFile ? static_cast<std::uint64_t>(size) : 0;
    h.data_offset = offset_;
    current_name_ = h.name;
    remaining_ = h.size;
    padding_ = padding_for(h.size);
    if (split_ && h.size > 0) split_->payload(entry_index_, h.name, h.size);
    ++entry_index_;
}

// ---------------------------------------------------------------------------------------
// Writer

namespace {

constexpr std::uint64_t kOctal11Max = 077777777777ULL;  // largest value of a 12-byte octal field
constexpr char kPaxHeaderName[] = "././@PaxHeader";

void put_string(std::uint8_t* block, Field f, const std::string& s) {
    std::memcpy(block + f.at, s.data(), std::min(s.size(), f.len));
}

// `digits` octal digits of `value`, zero padded (callers keep value within them).
void put_octal_digits(std::uint8_t* out, std::size_t digits, std::uint64_t value) {
    for (std::size_t i = digits; i-- > 0; value >>= 3) out[i] = static_cast<std::uint8_t>('0' + (value & 7));
}

void put_octal(std::uint8_t* block, Field f, std::uint64_t value) {
    // f.len - 1 digits, zero padded, NUL terminated.
    put_octal_digits(block + f.at, f.len - 1, value);
    block[f.at + f.len - 1] = 0;
}

void put_base256(std::uint8_t* block, Field f, std::int64_t value) {
    auto v = static_cast<std::uint64_t>(value);
    for (std::size_t i = 0; i < f.len; ++i) {
        block[f.at + f.len - 1 - i] = i < 8 ? static_cast<std::uint8_t>(v >> (8 * i))
                                            : (value < 0 ? 0xff : 0x00);
    }
    block[f.at] |= 0x80;
}

void put_checksum(std::uint8_t* block) {
    std::memset(block + kChecksum.at, ' ', kChecksum.len);
    unsigned sum = 0;
    for (std::size_t i = 0; i < kTarBlockSize; ++i) sum += block[i];
    put_octal_digits(block + kChecksum.at, 6, sum);
    block[kChecksum.at + 6] = 0;
    block[kChecksum.at + 7] = ' ';
}

bool fits_ustar_string(const std::string& s, std::size_t width) {
    if (s.size() > width) return false;
    for (unsigned char c : s)
        if (c >= 0x80) return false;
    return true;
}

// What the ustar field shows when PAX holds the real value: ASCII, cut to the width. A cut
// that leaves ".." as the last name would lead a reader of the field alone to the parent
// (the reader refuses such an entry): it is cut one character shorter.
std::string ascii_fallback(const std::string& s, std::size_t width) {
    std::string out;
    for (unsigned char c : s) {
        if (out.size() == width) break;
        out += c < 0x80 ? static_cast<char>(c) : '_';
    }
    const bool dotdot_end = out.size() >= 2 && out.compare(out.size() - 2, 2, "..") == 0 &&
                            (out.size() == 2 || is_separator(out[out.size() - 3]));
    if (out.size() < s.size() && dotdot_end) out.pop_back();
    return out;
}

std::string pax_record(const std::string& key, const std::string& value) {
    // The length counts its own digits: grow until the total is consistent.
    const std::size_t body = key.size() + value.size() + 3;  // ' ', '=', '\n'
    std::size_t len = body + 1;
    while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
    return std::to_string(len) + " " + key + "=" + value + "\n";
}

void base_header(std::uint8_t* block, const std::string& name, char type, std::uint32_t mode) {
    std::memset(block, 0, kTarBlockSize);
    put_string(block, kName, name);
    put_octal(block, kMode, mode);
    put_octal(block, kUid, 0);
    put_octal(block, kGid, 0);
    block[kTypeflag] = static_cast<std::uint8_t>(type);
    std::memcpy(block + kMagic.at, "ustar\0", 6);
    std::memcpy(block + kVersion.at, "00", 2);
    put_octal(block, kDevMajor, 0);
    put_octal(block, kDevMinor, 0);
}

[[noreturn]] void bad_argument(const std::string& message, const std::string& entry) {
    throw Error(ErrorKind::InvalidArgument, message).with_path(entry);
}

}  // namespace

TarWriter::TarWriter(Sink& out) : out_(out) {}

void TarWriter::emit(const std::uint8_t* data, std::size_t n) {
    out_.write(data, n);
    written_ += n;
}

void TarWriter::close_entry() {
    if (remaining_ > 0)
        bad_argument("tar entry is missing " + std::to_string(remaining_) + " bytes of payload",
                     current_);
    static const std::uint8_t zeros[kTarBlockSize] = {};
    if (padding_ > 0) emit(zeros, static_cast<std::size_t>(padding_));
    padding_ = 0;
}

void TarWriter::add(const TarHeader& h) {
    if (finished_) bad_argument("tar entry added after finish()", h.name);
    close_entry();

    if (h.name.empty()) bad_argument("tar entry needs a name", h.name);
    if (h.name.find('\0') != std::string::npos || h.linkname.find('\0') != std::string::npos)
        bad_argument("NUL in tar entry name or link name", h.name);
    if (h.type != tar_type::kFile && h.type != tar_type::kHardLink &&
        h.type != tar_type::kSymlink && h.type != tar_type::kDirectory)
        bad_argument("unsupported tar entry type " + printable_type(h.type), h.name);
    if (h.type != tar_type::kFile && h.size != 0)
        bad_argument("only regular files carry a payload", h.name);
    if ((h.type == tar_type::kHardLink || h.type == tar_type::kSymlink) && h.linkname.empty())
        bad_argument("link entry needs a link name", h.name);
    if (h.mode > 07777777) bad_argument("mode does not fit the tar header", h.name);
    if (h.size > static_cast<std::uint64_t>(kMaxInt64)) bad_argument("size too large", h.name);

    std::vector<std::pair<std::string, std::string>> records;
    for (const auto& r : h.pax) {
        if (r.key.empty() || r.key.find('=') != std::string::npos ||
            r.key.find('\0') != std::string::npos)
            bad_argument("invalid PAX key '" + r.key + "'", h.name);
        if (is_field_key(r.key))
            bad_argument("PAX record '" + r.key + "' is written from the header fields", h.name);
        records.emplace_back(r.key, r.value);
    }

    std::uint8_t block[kTarBlockSize];
    base_header(block, fits_ustar_string(h.name, kName.len) ? h.name : ascii_fallback(h.name, kName.len),
                h.type, h.mode);
    if (!fits_ustar_string(h.name, kName.len)) records.emplace_back("path", h.name);
    if (fits_ustar_string(h.linkname, kLinkname.len)) {
        put_string(block, kLinkname, h.linkname);
    } else {
        put_string(block, kLinkname, ascii_fallback(h.linkname, kLinkname.len));
        records.emplace_back("linkpath", h.linkname);
    }
    if (h.size <= kOctal11Max) {
        put_octal(block, kSize, h.size);
    } else {
        put_base256(block, kSize, static_cast<std::int64_t>(h.size));
        records.emplace_back("size", std::to_string(h.size));
    }
    if (h.mtime.sec >= 0 && static_cast<std::uint64_t>(h.mtime.sec) <= kOctal11Max)
        put_octal(block, kMtime, static_cast<std::uint64_t>(h.mtime.sec));
    else
        put_base256(block, kMtime, h.mtime.sec);
    if (h.mtime.nsec != 0 || h.mtime.sec < 0 || static_cast<std::uint64_t>(h.mtime.sec) > kOctal11Max)
        records.emplace_back("mtime", format_pax_time(h.mtime));
    if (h.atime) records.emplace_back("atime", format_pax_time(*h.atime));
    if (h.ctime) records.emplace_back("ctime", format_pax_time(*h.ctime));
    put_checksum(block);

    if (!records.empty()) {
        std::sort(records.begin(), records.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        for (std::size_t i = 1; i < records.size(); ++i)
            if (records[i].first == records[i - 1].first)
                bad_argument("duplicate PAX record '" + records[i].first + "'", h.name);
        std::string data;
        for (const auto& r : records) data += pax_record(r.first, r.second);
        std::uint8_t pax_block[kTarBlockSize];
        base_header(pax_block, kPaxHeaderName, 'x', 0);
        put_octal(pax_block, kSize, data.size());
        put_octal(pax_block, kMtime, 0);
        put_checksum(pax_block);
        emit(pax_block, kTarBlockSize);
        emit(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
        static const std::uint8_t zeros[kTarBlockSize] = {};
        emit(zeros, static_cast<std::size_t>(padding_for(data.size())));
    }
    emit(block, kTarBlockSize);
    current_ = h.name;
    remaining_ = h.size;
    padding_ = padding_for(h.size);
}

void TarWriter::write(const std::uint8_t* data, std::size_t n) {
    if (n > remaining_)
        bad_argument("payload longer than the tar entry's size", current_);
    emit(data, n);
    remaining_ -= n;
}

void TarWriter::finish() {
    if (finished_) bad_argument("tar writer finished twice", current_);
    close_entry();
    static const std::uint8_t zeros[2 * kTarBlockSize] = {};
    emit(zeros, sizeof zeros);
    finished_ = true;
}

}  // namespace winlayer
