#include "backup_stream.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "encoding.hpp"
#include "error.hpp"

namespace winlayer {

namespace {

void put_u16(std::string& out, std::uint32_t v) {
    out += static_cast<char>(v & 0xff);
    out += static_cast<char>((v >> 8) & 0xff);
}

void put_u32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

std::uint32_t get_u16(const std::uint8_t* p) { return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8); }

std::uint32_t get_u32(const std::uint8_t* p) {
    return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
           (std::uint32_t(p[3]) << 24);
}

std::uint64_t get_u64(const std::uint8_t* p) {
    return std::uint64_t(get_u32(p)) | (std::uint64_t(get_u32(p + 4)) << 32);
}

const std::uint8_t* bytes(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

Error bad_argument(const std::string& message) { return Error(ErrorKind::InvalidArgument, message); }

bool is_drive_path(const std::string& t) {
    return t.size() >= 2 && ((t[0] >= 'A' && t[0] <= 'Z') || (t[0] >= 'a' && t[0] <= 'z')) && t[1] == ':';
}

constexpr std::uint8_t kZeros[64 * 1024] = {};

}  // namespace

void append_backup_header(std::string& out, std::uint32_t id, std::uint32_t attributes,
                          std::uint64_t size, const std::string& name) {
    std::string name16;
    if (!utf8_to_utf16le(name, name16)) throw bad_argument("backup stream name is not UTF-8");
    if (name16.size() > kMaxBackupNameBytes) throw bad_argument("backup stream name too long: " + name);
    put_u32(out, id);
    put_u32(out, attributes);
    put_u64(out, size);
    put_u32(out, static_cast<std::uint32_t>(name16.size()));
    out += name16;
}

// --- extended attributes --------------------------------------------------------------

std::string encode_extended_attributes(const ExtendedAttributes& eas) {
    std::string out;
    for (std::size_t i = 0; i < eas.size(); ++i) {
        const auto& [name, value] = eas[i];
        if (name.empty() || name.size() > 255 || name.find('\0') != std::string::npos)
            throw bad_argument("extended attribute name must be 1-255 bytes without NUL: '" + name + "'");
        if (value.size() > 0xffff)
            throw bad_argument("extended attribute value over 65535 bytes: '" + name + "'");
        std::size_t entry = 8 + name.size() + 1 + value.size();
        bool last = i + 1 == eas.size();
        std::size_t padded = last ? entry : (entry + 3) & ~std::size_t(3);
        put_u32(out, last ? 0 : static_cast<std::uint32_t>(padded));
        out += '\0';  // flags
        out += static_cast<char>(name.size());
        put_u16(out, static_cast<std::uint32_t>(value.size()));
        out += name;
        out += '\0';
        out += value;
        out.append(padded - entry, '\0');
    }
    return out;
}

ExtendedAttributes decode_extended_attributes(const std::string& data) {
    ExtendedAttributes eas;
    const std::uint8_t* p = bytes(data);
    std::size_t pos = 0;
    while (pos < data.size()) {
        auto fail = [&](const std::string& m, std::size_t at) -> Error {
            return Error::invalid_layer("malformed extended attributes: " + m, "", static_cast<std::int64_t>(at));
        };
        if (data.size() - pos < 8) throw fail("truncated entry header", pos);
        std::uint32_t next = get_u32(p + pos);
        std::size_t name_len = p[pos + 5];
        std::size_t value_len = get_u16(p + pos + 6);
        std::size_t entry = 8 + name_len + 1 + value_len;
        if (name_len == 0) throw fail("empty name", pos);
        if (entry > data.size() - pos) throw fail("entry runs past the end", pos);
        if (p[pos + 8 + name_len] != 0) throw fail("name not NUL-terminated", pos + 8 + name_len);
        std::string name(data, pos + 8, name_len);
        if (name.find('\0') != std::string::npos) throw fail("NUL inside a name", pos + 8);
        eas.emplace_back(std::move(name), data.substr(pos + 8 + name_len + 1, value_len));
        if (next == 0) {
            // The last entry: at most alignment padding may follow.
            std::size_t tail = pos + entry;
            if (data.size() - tail > 3) throw fail("data after the last entry", tail);
            for (std::size_t k = tail; k < data.size(); ++k)
                if (p[k] != 0) throw fail("data after the last entry", k);
            return eas;
        }
        if (next < entry || next % 4 != 0 || next > data.size() - pos)
            throw fail("bad next-entry offset " + std::to_string(next), pos);
        pos += next;
    }
    if (!data.empty()) throw Error::invalid_layer("malformed extended attributes: last entry has a next offset", "",
                                                  static_cast<std::int64_t>(data.size()));
    return eas;
}

// --- reparse points -------------------------------------------------------------------

std::string encode_reparse_point(const std::string& target, bool mount_point) {
    if (target.empty()) throw bad_argument("empty symlink target");
    if (target.find('\0') != std::string::npos) throw bad_argument("NUL in symlink target");
    std::string nt;
    bool relative = false;
    if (target.rfind("\\\\?\\", 0) == 0) {
        nt = "\\??\\" + target.substr(4);
    } else if (target.rfind("\\\\", 0) == 0) {
        nt = "\\??\\UNC\\" + target.substr(2);
    } else if (is_drive_path(target)) {
        nt = "\\??\\" + target;
    } else {
        nt = target;
        relative = true;
    }
    if (mount_point && relative) throw bad_argument("junction target must be absolute: '" + target + "'");
    std::string nt16, print16;
    if (!utf8_to_utf16le(nt, nt16) || !utf8_to_utf16le(target, print16))
        throw bad_argument("symlink target is not UTF-8");
    std::size_t header = mount_point ? 8 : 12;  // name offsets/lengths (+ symlink flags)
    std::size_t data_len = header + nt16.size() + 2 + print16.size() + 2;
    if (8 + data_len > kMaxReparseData) throw bad_argument("symlink target too long: '" + target + "'");
    std::string out;
    out.reserve(8 + data_len);
    put_u32(out, mount_point ? kReparseTagMountPoint : kReparseTagSymlink);
    put_u16(out, static_cast<std::uint32_t>(data_len));
    put_u16(out, 0);
    put_u16(out, 0);                                            // substitute name offset
    put_u16(out, static_cast<std::uint32_t>(nt16.size()));      // substitute name length
    put_u16(out, static_cast<std::uint32_t>(nt16.size() + 2));  // print name offset
    put_u16(out, static_cast<std::uint32_t>(print16.size()));   // print name length
    if (!mount_point) put_u32(out, relative ? kSymlinkFlagRelative : 0);
    out += nt16;
    out.append(2, '\0');
    out += print16;
    out.append(2, '\0');
    return out;
}

ReparsePoint decode_reparse_point(const std::string& data) {
    auto fail = [](const std::string& m, std::size_t at) {
        return Error::invalid_layer("malformed reparse data: " + m, "", static_cast<std::int64_t>(at));
    };
    const std::uint8_t* p = bytes(data);
    if (data.size() < 8) throw fail("shorter than its header", 0);
    std::uint32_t tag = get_u32(p);
    std::size_t data_len = get_u16(p + 4);
    if (tag != kReparseTagSymlink && tag != kReparseTagMountPoint) {
        char buf[80];
        std::snprintf(buf, sizeof buf, "reparse tag 0x%08X is not a symlink or junction", static_cast<unsigned>(tag));
        throw Error::invalid_layer(buf, "", 0);
    }
    if (8 + data_len != data.size()) throw fail("data length field disagrees with the buffer", 4);
    ReparsePoint rp;
    rp.mount_point = tag == kReparseTagMountPoint;
    std::size_t header = rp.mount_point ? 8 : 12;
    if (data_len < header) throw fail("shorter than its header", 8);
    const std::uint8_t* h = p + 8;
    std::size_t sub_off = get_u16(h), sub_len = get_u16(h + 2);
    std::size_t print_off = get_u16(h + 4), print_len = get_u16(h + 6);
    if (!rp.mount_point) rp.relative = (get_u32(h + 8) & kSymlinkFlagRelative) != 0;
    std::size_t path_size = data_len - header;
    const std::uint8_t* paths = h + header;
    auto name = [&](std::size_t off, std::size_t len, std::size_t field) {
        if (off > path_size || len > path_size - off || off % 2 || len % 2)
            throw fail("name outside the path buffer", 8 + field);
        std::string s;
        if (!utf16le_to_utf8(paths + off, len, s)) throw fail("name is not valid UTF-16", 8 + header + off);
        if (s.find('\0') != std::string::npos) throw fail("NUL inside a name", 8 + header + off);
        return s;
    };
    std::string print = name(print_off, print_len, 4);
    std::string sub = name(sub_off, sub_len, 0);
    if (!print.empty()) {
        rp.target = std::move(print);
    } else if (sub.rfind("\\??\\UNC\\", 0) == 0) {
        rp.target = "\\\\" + sub.substr(8);
    } else if (sub.rfind("\\??\\", 0) == 0) {
        rp.target = sub.substr(4);
        if (!is_drive_path(rp.target)) rp.target = "\\\\?\\" + rp.target;
    } else {
        rp.target = std::move(sub);
    }
    if (rp.target.empty()) throw fail("empty target", 8);
    return rp;
}

// --- encoder --------------------------------------------------------------------------

void BackupStreamEncoder::begin(const LayerEntry& entry) {
    finish();
    scratch_.clear();
    switch (entry.type) {
    case EntryType::AlternateStream: {
        std::size_t colon = entry.path.rfind(':');
        std::size_t slash = entry.path.rfind('/');
        if (colon == std::string::npos || (slash != std::string::npos && colon < slash) ||
            colon + 1 == entry.path.size())
            throw bad_argument("alternate stream path has no ':<stream>': '" + entry.path + "'");
        append_backup_header(scratch_, backup_id::kAlternateData, backup_attr::kNormal, entry.size,
                             entry.path.substr(colon) + ":$DATA");
        remaining_ = entry.size;
        break;
    }
    case EntryType::Directory:
    case EntryType::File:
    case EntryType::Symlink: {
        const std::string& sd = entry.security_descriptor;
        if (!sd.empty()) {
            append_backup_header(scratch_, backup_id::kSecurity, backup_attr::kContainsSecurity, sd.size());
            scratch_ += sd;
        }
        if (!entry.extended_attributes.empty()) {
            std::string ea = encode_extended_attributes(entry.extended_attributes);
            append_backup_header(scratch_, backup_id::kEa, backup_attr::kNormal, ea.size());
            scratch_ += ea;
        }
        if (entry.type == EntryType::Symlink) {
            std::string rp = entry.reparse_data.empty()
                                 ? encode_reparse_point(entry.link_target, entry.mount_point)
                                 : entry.reparse_data;
            append_backup_header(scratch_, backup_id::kReparse, backup_attr::kNormal, rp.size());
            scratch_ += rp;
        }
        if (entry.type == EntryType::File) {
            append_backup_header(scratch_, backup_id::kData, backup_attr::kNormal, entry.size);
            remaining_ = entry.size;
        }
        break;
    }
    case EntryType::HardLink:
    case EntryType::Whiteout:
        throw bad_argument("a hard link or whiteout has no backup stream: '" + entry.path + "'");
    }
    if (!scratch_.empty()) out_.write(bytes(scratch_), scratch_.size());
}

void BackupStreamEncoder::write(const std::uint8_t* data, std::size_t n) {
    if (n > remaining_) throw bad_argument("more data than the backup stream declared");
    remaining_ -= n;
    out_.write(data, n);
}

void BackupStreamEncoder::finish() {
    if (remaining_ != 0)
        throw bad_argument("backup data stream incomplete: " + std::to_string(remaining_) + " bytes missing");
}

// --- decoder --------------------------------------------------------------------------

void BackupStreamDecoder::fail(const std::string& message, std::uint64_t at) const {
    throw Error::invalid_layer("malformed backup stream: " + message, label_, static_cast<std::int64_t>(at));
}

void BackupStreamDecoder::emit_zeros(std::uint64_t count) {
    while (count > 0) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(count, sizeof kZeros));
        handler_.data(kZeros, n);
        count -= n;
    }
}

void BackupStreamDecoder::end_sparse() {
    if (!sparse_open_) return;
    sparse_open_ = false;
    handler_.end_data(sparse_pos_);
}

// Called once the header and name of a record are in.
void BackupStreamDecoder::start_record() {
    std::string name;
    if (!utf16le_to_utf8(bytes(buffer_), buffer_.size(), name)) fail("stream name is not UTF-16", record_at_ + 20);
    buffer_.clear();
    left_ = size_;
    if (id_ == backup_id::kSparseBlock) {
        if (!sparse_open_) fail("sparse block without an open sparse stream", record_at_);
        if (size_ < 8) fail("sparse block shorter than its offset", record_at_ + 8);
        kind_ = Kind::SparseOffset;
        return;
    }
    end_sparse();
    switch (id_) {
    case backup_id::kSecurity:
    case backup_id::kEa:
    case backup_id::kReparse:
        if (size_ > kMaxBackupMetadata) fail("metadata stream of " + std::to_string(size_) + " bytes", record_at_ + 8);
        kind_ = Kind::Metadata;
        buffer_.reserve(static_cast<std::size_t>(size_));
        break;
    case backup_id::kData:
    case backup_id::kAlternateData: {
        std::string stream;
        if (id_ == backup_id::kAlternateData) {
            const std::string suffix = ":$DATA";
            if (name.size() < 2 + suffix.size() || name[0] != ':' ||
                name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
                fail("alternate stream name '" + name + "' is not ':<name>:$DATA'", record_at_ + 20);
            stream = name.substr(1, name.size() - 1 - suffix.size());
            if (stream.find(':') != std::string::npos) fail("alternate stream name '" + name + "'", record_at_ + 20);
        } else if (!name.empty()) {
            fail("data stream with a name", record_at_ + 20);
        }
        if ((attributes_ & backup_attr::kSparse) && size_ == 0) {
            // The ranges follow as SPARSE_BLOCK records (none for an empty file): the
            // dense length is known only when they end. A sparse file with one allocated
            // range carries its data inline instead, like a dense one (the else branch).
            handler_.begin_data(stream, BackupStreamHandler::kUnknownSize);
            sparse_open_ = true;
            sparse_pos_ = 0;
            kind_ = Kind::SparseMarker;
        } else {
            handler_.begin_data(stream, size_);
            kind_ = Kind::Data;
        }
        break;
    }
    case backup_id::kLink:
    case backup_id::kProperty:
    case backup_id::kObjectId:
    case backup_id::kTxfs:
        kind_ = Kind::Skip;
        break;
    default:
        fail("unknown stream id " + std::to_string(id_), record_at_);
    }
}

void BackupStreamDecoder::end_record() {
    switch (kind_) {
    case Kind::Metadata: {
        std::string payload = std::move(buffer_);
        buffer_.clear();
        try {
            if (id_ == backup_id::kSecurity) {
                handler_.security(std::move(payload));
            } else if (id_ == backup_id::kEa) {
                handler_.extended_attributes(decode_extended_attributes(payload));
            } else {
                handler_.reparse(std::move(payload));
            }
        } catch (Error& e) {
            if (e.kind == ErrorKind::InvalidLayer && e.entry.empty())
                fail(e.message, record_at_ + kBackupHeaderSize + name_size_ + static_cast<std::uint64_t>(std::max<std::int64_t>(e.offset, 0)));
            throw;
        }
        break;
    }
    case Kind::Data:
        handler_.end_data(size_);
        break;
    case Kind::SparseOffset:  // a size-8 block: the terminator
    case Kind::SparseData:
    case Kind::SparseMarker:
    case Kind::Skip:
        break;
    }
    state_ = State::Header;
    have_ = 0;
}

void BackupStreamDecoder::feed(const std::uint8_t* data, std::size_t n) {
    while (n > 0 || (state_ == State::Payload && left_ == 0 && kind_ != Kind::SparseOffset)) {
        switch (state_) {
        case State::Header: {
            std::size_t take = std::min(n, kBackupHeaderSize - have_);
            std::memcpy(header_ + have_, data, take);
            have_ += take;
            data += take;
            n -= take;
            offset_ += take;
            if (have_ < kBackupHeaderSize) return;
            record_at_ = offset_ - kBackupHeaderSize;
            id_ = get_u32(header_);
            attributes_ = get_u32(header_ + 4);
            size_ = get_u64(header_ + 8);
            name_size_ = get_u32(header_ + 16);
            if (name_size_ % 2 != 0 || name_size_ > kMaxBackupNameBytes)
                fail("bad stream name size " + std::to_string(name_size_), record_at_ + 16);
            buffer_.clear();
            state_ = State::Name;
            if (name_size_ == 0) {
                start_record();
                state_ = State::Payload;
            }
            break;
        }
        case State::Name: {
            std::size_t take = std::min<std::size_t>(n, name_size_ - buffer_.size());
            buffer_.append(reinterpret_cast<const char*>(data), take);
            data += take;
            n -= take;
            offset_ += take;
            if (buffer_.size() < name_size_) return;
            start_record();
            state_ = State::Payload;
            break;
        }
        case State::Payload: {
            if (kind_ == Kind::SparseOffset) {
                std::size_t take = std::min<std::size_t>(n, 8 - buffer_.size());
                buffer_.append(reinterpret_cast<const char*>(data), take);
                data += take;
                n -= take;
                offset_ += take;
                left_ -= take;
                if (buffer_.size() < 8) return;
                std::uint64_t block = get_u64(bytes(buffer_));
                buffer_.clear();
                if (block >= (std::uint64_t(1) << 63) || block < sparse_pos_)
                    fail("sparse block offset " + std::to_string(static_cast<std::int64_t>(block)) +
                             " before the end of the previous block",
                         offset_ - 8);
                if (block > sparse_limit_ || left_ > sparse_limit_ - block)
                    fail("sparse block past the stream's size limit of " + std::to_string(sparse_limit_) + " bytes",
                         offset_ - 8);
                emit_zeros(block - sparse_pos_);
                sparse_pos_ = block;
                if (left_ == 0) {  // the terminating block: offset = stream size
                    end_sparse();
                    end_record();
                } else {
                    kind_ = Kind::SparseData;
                }
                break;
            }
            std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(n, left_));
            if (kind_ == Kind::Metadata) {
                buffer_.append(reinterpret_cast<const char*>(data), take);
            } else if ((kind_ == Kind::Data || kind_ == Kind::SparseData) && take > 0) {
                handler_.data(data, take);
                if (kind_ == Kind::SparseData) sparse_pos_ += take;
            }
            data += take;
            n -= take;
            offset_ += take;
            left_ -= take;
            if (left_ == 0) end_record();
            break;
        }
        }
    }
}

void BackupStreamDecoder::finish() {
    if (state_ != State::Header || have_ != 0) fail("stream ends inside a record", offset_);
    end_sparse();
}

}  // namespace winlayer
