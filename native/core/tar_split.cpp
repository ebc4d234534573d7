#include "tar_split.hpp"

#include <cstring>
#include <memory>
#include <utility>

#include "error.hpp"
#include "layer_tar.hpp"
#include "memory_io.hpp"
#include "sha256_worker.hpp"

namespace winlayer {

namespace {

constexpr char kMagic[] = "WLTS";
constexpr std::uint8_t kEnd = 0x00, kLiteral = 0x01, kZeros = 0x02, kPayload = 0x03, kMatch = 0x04;
// Shorter zero runs stay inside literals: a ZEROS record would not be smaller.
constexpr std::uint64_t kMinZeroRun = 32;
// What the record may hold before it goes to a sink (TarSplitWriter::stream_to).
constexpr std::size_t kSpillBytes = 64 * 1024;
// Shorter matches cost as much as the bytes they replace.
constexpr std::size_t kMinMatch = 8;
constexpr int kHashBits = 12;

std::uint32_t hash4(const char* p) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return (v * 2654435761u) >> (32 - kHashBits);
}

void put_varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out += static_cast<char>((v & 0x7f) | 0x80);
        v >>= 7;
    }
    out += static_cast<char>(v);
}

[[noreturn]] void corrupt(const std::string& why, std::size_t at) {
    throw Error(ErrorKind::StoreCorrupt,
                "damaged tar-split record: " + why + " at byte " + std::to_string(at));
}

// One record of a tar-split, as decoded by Parser.
struct Record {
    std::uint8_t tag = kEnd;
    const char* literal = nullptr;  // LITERAL
    std::uint64_t count = 0;        // LITERAL length, ZEROS count, PAYLOAD size, END total size
    TarSplitPayload payload;        // PAYLOAD
    const std::uint8_t* digest = nullptr;  // END: 32 bytes
    std::uint64_t distance = 0;             // MATCH (count = length)
};

// Reads a record from a Source through a buffer of its own: a record is never held
// whole, only the one being decoded (a literal is at most kMaxLiteral bytes).
class Parser {
public:
    explicit Parser(Source& src) : src_(src) {
        if (!have(5) || std::memcmp(buf_.data() + pos_, kMagic, 4) != 0) corrupt("bad magic", 0);
        version_ = static_cast<std::uint8_t>(buf_[pos_ + 4]);
        if (version_ != 1 && version_ != kTarSplitVersion)
            corrupt("unknown version " + std::to_string(version_), 4);
        skip(5);
    }

    // Decodes the next record; false once END has been returned. Pointers in `r` stay
    // valid until the next call.
    bool next(Record& r) {
        if (ended_) return false;
        if (!have(1)) corrupt("missing END record", offset());
        const std::uint64_t at = offset();
        r.tag = static_cast<std::uint8_t>(buf_[pos_]);
        skip(1);
        switch (r.tag) {
        case kLiteral:
            r.count = varint();
            if (r.count == 0 || r.count > kMaxLiteral || !have(r.count)) corrupt("bad literal length", at);
            r.literal = buf_.data() + pos_;
            skip(r.count);
            history_ += r.count;
            break;
        case kMatch:
            if (version_ < 2) corrupt("unknown record tag 4", at);
            r.distance = varint();
            r.count = varint();
            if (r.distance == 0 || r.distance > kTarSplitWindow || r.distance > history_ || r.count == 0)
                corrupt("bad match", at);
            history_ += r.count;
            break;
        case kZeros:
            r.count = varint();
            break;
        case kPayload: {
            const std::uint64_t delta = varint();
            if (any_payload_ && delta == 0) corrupt("payload entry index does not advance", at);
            if (any_payload_ && delta > UINT64_MAX - last_index_)
                corrupt("payload entry index overflows", at);
            r.payload.entry_index = any_payload_ ? last_index_ + delta : delta;
            const std::uint64_t shared = varint();
            const std::uint64_t suffix = varint();
            if (shared > last_name_.size() || suffix > kMaxLiteral || !have(suffix)) corrupt("bad payload name", at);
            r.payload.name = last_name_.substr(0, static_cast<std::size_t>(shared));
            r.payload.name.append(buf_.data() + pos_, static_cast<std::size_t>(suffix));
            skip(suffix);
            r.payload.size = varint();
            r.count = r.payload.size;
            last_name_ = r.payload.name;
            last_index_ = r.payload.entry_index;
            any_payload_ = true;
            break;
        }
        case kEnd:
            r.count = varint();
            if (!have(32)) corrupt("bad END record", at);
            std::memcpy(end_digest_, buf_.data() + pos_, 32);  // have() below may move buf_
            r.digest = end_digest_;
            skip(32);
            if (have(1)) corrupt("bad END record", at);  // nothing may follow it
            if (r.count != total_) corrupt("sizes do not add up to the recorded total", at);
            ended_ = true;
            break;
        default:
            corrupt("unknown record tag " + std::to_string(r.tag), at);
        }
        if (r.tag != kEnd) {
            if (r.count > UINT64_MAX - total_) corrupt("sizes overflow", at);
            total_ += r.count;
        }
        return true;
    }

private:
    // Longer literals and payload names are damage: the writer records one entry's
    // headers (at most a few MiB) between two payloads.
    static constexpr std::uint64_t kMaxLiteral = std::uint64_t(64) << 20;
    static constexpr std::size_t kRead = 256 * 1024;

    // Whether `n` bytes are there at pos_, reading more (and moving what is left to the
    // front) as needed.
    bool have(std::uint64_t n) {
        if (end_ - pos_ >= n) return true;
        if (eof_) return false;
        if (pos_ > 0) {
            std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
            consumed_ += pos_;
            end_ -= pos_;
            pos_ = 0;
        }
        while (end_ < n && !eof_) {
            // Grown as bytes arrive, not to what a (maybe damaged) length claims.
            if (buf_.size() - end_ < kRead) buf_.resize(std::max(2 * buf_.size(), end_ + kRead));
            const std::size_t got =
                src_.read(reinterpret_cast<std::uint8_t*>(buf_.data() + end_), buf_.size() - end_);
            if (got == 0) eof_ = true;
            end_ += got;
        }
        return end_ >= n;
    }
    void skip(std::uint64_t n) { pos_ += static_cast<std::size_t>(n); }
    std::uint64_t offset() const { return consumed_ + pos_; }

    std::uint64_t varint() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (!have(1)) corrupt("truncated number", offset());
            const auto byte = static_cast<std::uint8_t>(buf_[pos_]);
            skip(1);
            if (shift == 63 && byte > 1) break;
            v |= std::uint64_t(byte & 0x7f) << shift;
            if (!(byte & 0x80)) return v;
        }
        corrupt("number too large", offset());
    }

    Source& src_;
    std::string buf_;
    std::size_t pos_ = 0, end_ = 0;  // the unread bytes are buf_[pos_, end_)
    std::uint64_t consumed_ = 0;     // record bytes before buf_[0]
    bool eof_ = false;
    std::uint8_t version_ = 0;
    std::uint64_t history_ = 0;  // bytes LITERAL and MATCH records produced so far
    std::uint64_t total_ = 0;    // bytes all records produced so far
    bool ended_ = false;
    bool any_payload_ = false;
    std::uint64_t last_index_ = 0;
    std::string last_name_;
    std::uint8_t end_digest_[32] = {};
};

}  // namespace

TarSplitWriter::TarSplitWriter() : out_(kMagic) { out_ += static_cast<char>(kTarSplitVersion); }

void TarSplitWriter::emit_literal(const char* data, std::size_t n) {
    if (n == 0) return;
    out_ += static_cast<char>(kLiteral);
    put_varint(out_, n);
    out_.append(data, n);
}

// Greedy LZ77 over the pending literal bytes, against the history window (and the
// literal itself): one hash-table probe per position, matches of kMinMatch bytes or more.
void TarSplitWriter::flush_literal() {
    if (literal_.empty()) return;
    if (last_seen_.empty()) last_seen_.assign(std::size_t(1) << kHashBits, 0);
    const std::size_t start = history_.size();
    history_ += literal_;
    literal_.clear();
    const char* h = history_.data();
    const std::size_t end = history_.size();
    std::size_t lit = start;
    std::size_t i = start;
    std::size_t misses = 0;  // in a row: data without repeats (base64 of random ids) is
                             // probed ever more sparsely, as LZ4 does
    while (i + 4 <= end) {
        const std::uint32_t key = hash4(h + i);
        const std::size_t seen = last_seen_[key];
        last_seen_[key] = static_cast<std::uint32_t>(i + 1);
        if (seen != 0 && i + 1 - seen <= kTarSplitWindow) {
            const std::size_t cand = seen - 1;
            std::size_t len = 0;
            while (i + len + 8 <= end && std::memcmp(h + cand + len, h + i + len, 8) == 0) len += 8;
            while (i + len < end && h[cand + len] == h[i + len]) ++len;
            if (len >= kMinMatch) {
                emit_literal(h + lit, i - lit);
                out_ += static_cast<char>(kMatch);
                put_varint(out_, i - cand);
                put_varint(out_, len);
                // Index the match's tail: the next header repeats what follows it.
                for (std::size_t k = len > 16 ? len - 16 : 1; k < len && i + k + 4 <= end; k += 2)
                    last_seen_[hash4(h + i + k)] = static_cast<std::uint32_t>(i + k + 1);
                i += len;
                lit = i;
                misses = 0;
                continue;
            }
        }
        i += 1 + (misses++ >> 5);
    }
    emit_literal(h + lit, end - lit);
    spill(false);
    // Keep one window of history; drop the rest in large steps (cheap amortized).
    if (history_.size() > 4 * kTarSplitWindow) {
        const std::size_t drop = history_.size() - kTarSplitWindow;
        history_.erase(0, drop);
        for (std::uint32_t& seen : last_seen_) seen = seen > drop ? static_cast<std::uint32_t>(seen - drop) : 0;
    }
}

void TarSplitWriter::flush_zeros() {
    if (zeros_ >= kMinZeroRun) {
        flush_literal();
        out_ += static_cast<char>(kZeros);
        put_varint(out_, zeros_);
    } else {
        literal_.append(static_cast<std::size_t>(zeros_), '\0');
    }
    zeros_ = 0;
}

void TarSplitWriter::raw(const std::uint8_t* data, std::size_t n) {
    const std::uint8_t* end = data + n;
    while (data < end) {
        if (*data == 0) {
            const std::uint8_t* run = data;
            while (data < end && *data == 0) ++data;
            zeros_ += static_cast<std::uint64_t>(data - run);
        } else {
            if (zeros_ > 0) flush_zeros();
            const std::uint8_t* run = data;
            while (data < end && *data != 0) ++data;
            literal_.append(reinterpret_cast<const char*>(run), static_cast<std::size_t>(data - run));
        }
    }
}

void TarSplitWriter::payload(std::uint64_t entry_index, const std::string& name, std::uint64_t size) {
    if (finished_) throw Error(ErrorKind::Internal, "tar-split payload after finish");
    if (any_payload_ && entry_index <= last_index_)
        throw Error(ErrorKind::Internal, "tar-split payload indexes must increase");
    flush_zeros();
    flush_literal();
    out_ += static_cast<char>(kPayload);
    put_varint(out_, any_payload_ ? entry_index - last_index_ : entry_index);
    std::size_t shared = 0;
    while (shared < name.size() && shared < last_name_.size() && name[shared] == last_name_[shared])
        ++shared;
    put_varint(out_, shared);
    put_varint(out_, name.size() - shared);
    out_.append(name, shared, std::string::npos);
    put_varint(out_, size);
    last_index_ = entry_index;
    last_name_ = name;
    any_payload_ = true;
    spill(false);
}

void TarSplitWriter::spill(bool all) {
    if (!sink_ || out_.empty() || (!all && out_.size() < kSpillBytes)) return;
    sink_->write(reinterpret_cast<const std::uint8_t*>(out_.data()), out_.size());
    out_.clear();
}

void TarSplitWriter::finish(std::uint64_t total_size, const Sha256::Digest& digest) {
    if (finished_) throw Error(ErrorKind::Internal, "tar-split finished twice");
    flush_zeros();
    flush_literal();
    out_ += static_cast<char>(kEnd);
    put_varint(out_, total_size);
    out_.append(reinterpret_cast<const char*>(digest.data()), digest.size());
    spill(true);
    finished_ = true;
}

std::string TarSplitWriter::take() {
    if (!finished_) throw Error(ErrorKind::Internal, "tar-split record taken before finish");
    return std::move(out_);
}

TarSplitSummary inspect_tar_split(const std::string& record) {
    MemorySource src(reinterpret_cast<const std::uint8_t*>(record.data()), record.size());
    TarSplitSummary summary;
    Parser parser(src);
    Record r;
    while (parser.next(r)) {
        if (r.tag == kPayload) summary.payloads.push_back(r.payload);
        if (r.tag == kEnd) {
            summary.total_size = r.count;
            summary.digest = "sha256:" + hex(r.digest, 32);
        }
    }
    return summary;
}

void rebuild_layer_tar(const std::string& tar_split, PayloadStore& payloads, Sink& out) {
    auto open = [&] {
        return std::make_unique<MemorySource>(reinterpret_cast<const std::uint8_t*>(tar_split.data()),
                                              tar_split.size());
    };
    rebuild_layer_tar(open, payloads, out);
}

void rebuild_layer_tar(const std::function<std::unique_ptr<Source>()>& open_record, PayloadStore& payloads,
                       Sink& out) {
    // A damaged record fails before the first byte is written (it is read twice: the
    // check parses, keeping nothing).
    {
        std::unique_ptr<Source> src = open_record();
        Parser check(*src);
        Record r;
        while (check.next(r)) {
        }
    }
    std::unique_ptr<Source> src = open_record();
    Parser parser(*src);
    Sha256Worker hash;  // the check of what was written, off this thread
    std::uint64_t total = 0;
    auto emit = [&](const std::uint8_t* data, std::size_t n) {
        hash.update(data, n);
        out.write(data, n);
        total += n;
    };
    constexpr std::size_t kChunk = std::size_t(1) << 20;
    // The bytes LITERAL and MATCH records produced, for MATCH to copy from.
    std::string history;
    auto trim = [&] {
        if (history.size() > 4 * kTarSplitWindow) history.erase(0, history.size() - kTarSplitWindow);
    };
    static const std::uint8_t zeros[64 * 1024] = {};
    Record r;
    while (parser.next(r)) {
        switch (r.tag) {
        case kLiteral:
            emit(reinterpret_cast<const std::uint8_t*>(r.literal), static_cast<std::size_t>(r.count));
            history.append(r.literal, static_cast<std::size_t>(r.count));
            trim();
            break;
        case kMatch: {
            // A match may overlap what it produces: copied in pieces of at most `distance`
            // bytes, each from bytes already there; written out in pieces.
            const auto distance = static_cast<std::size_t>(r.distance);
            std::uint64_t left = r.count;
            while (left > 0) {
                const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, kTarSplitWindow));
                const std::size_t from = history.size();
                history.resize(from + n);
                char* h = &history[0];
                for (std::size_t k = 0; k < n;) {
                    const std::size_t m = std::min(n - k, distance);
                    std::memcpy(h + from + k, h + from + k - distance, m);
                    k += m;
                }
                emit(reinterpret_cast<const std::uint8_t*>(history.data() + from), n);
                left -= n;
                trim();
            }
            break;
        }
        case kZeros:
            for (std::uint64_t left = r.count; left > 0;) {
                const std::size_t k = left < sizeof zeros ? static_cast<std::size_t>(left) : sizeof zeros;
                emit(zeros, k);
                left -= k;
            }
            break;
        case kPayload: {
            std::unique_ptr<Source> payload = payloads.open(r.payload.name, r.payload.size);
            std::uint64_t left = r.payload.size;
            while (left > 0) {
                // Read straight into the hash's block: the payload is copied once, out.
                std::size_t want = left < kChunk ? static_cast<std::size_t>(left) : kChunk;
                std::uint8_t* room = hash.room(want);
                const std::size_t got = payload->read(room, want);
                if (got == 0)
                    throw Error(ErrorKind::StoreCorrupt,
                                "stored payload of tar entry '" + r.payload.name + "' has " +
                                    std::to_string(r.payload.size - left) + " bytes, the tar had " +
                                    std::to_string(r.payload.size));
                out.write(room, got);
                hash.wrote(got);
                total += got;
                left -= got;
            }
            std::uint8_t extra = 0;
            if (payload->read(&extra, 1) != 0)
                throw Error(ErrorKind::StoreCorrupt,
                            "stored payload of tar entry '" + r.payload.name +
                                "' is longer than the " + std::to_string(r.payload.size) +
                                " bytes the tar had");
            break;
        }
        case kEnd: {
            const std::string expected = "sha256:" + hex(r.digest, 32);
            const std::string actual = hash.oci_digest();
            if (total != r.count || expected != actual) throw Error::digest_mismatch(expected, actual);
            break;
        }
        }
    }
}

}  // namespace winlayer
