#include "tar_split.hpp"

#include <cstring>
#include <memory>
#include <utility>

#include "error.hpp"
#include "layer_tar.hpp"

namespace winlayer {

namespace {

constexpr char kMagic[] = "WLTS";
constexpr std::uint8_t kEnd = 0x00, kLiteral = 0x01, kZeros = 0x02, kPayload = 0x03;
// Shorter zero runs stay inside literals: a ZEROS record would not be smaller.
constexpr std::uint64_t kMinZeroRun = 32;

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
};

class Parser {
public:
    explicit Parser(const std::string& rec) : rec_(rec) {
        if (rec.size() < 5 || rec.compare(0, 4, kMagic) != 0) corrupt("bad magic", 0);
        if (static_cast<std::uint8_t>(rec[4]) != kTarSplitVersion)
            corrupt("unknown version " + std::to_string(static_cast<std::uint8_t>(rec[4])), 4);
        pos_ = 5;
    }

    // Decodes the next record; false once END has been returned.
    bool next(Record& r) {
        if (ended_) return false;
        if (pos_ >= rec_.size()) corrupt("missing END record", pos_);
        const std::size_t at = pos_;
        r.tag = static_cast<std::uint8_t>(rec_[pos_++]);
        switch (r.tag) {
        case kLiteral:
            r.count = varint();
            if (r.count == 0 || r.count > rec_.size() - pos_) corrupt("bad literal length", at);
            r.literal = rec_.data() + pos_;
            pos_ += static_cast<std::size_t>(r.count);
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
            if (shared > last_name_.size() || suffix > rec_.size() - pos_) corrupt("bad payload name", at);
            r.payload.name = last_name_.substr(0, static_cast<std::size_t>(shared));
            r.payload.name.append(rec_, pos_, static_cast<std::size_t>(suffix));
            pos_ += static_cast<std::size_t>(suffix);
            r.payload.size = varint();
            r.count = r.payload.size;
            last_name_ = r.payload.name;
            last_index_ = r.payload.entry_index;
            any_payload_ = true;
            break;
        }
        case kEnd:
            r.count = varint();
            if (rec_.size() - pos_ != 32) corrupt("bad END record", at);
            r.digest = reinterpret_cast<const std::uint8_t*>(rec_.data() + pos_);
            pos_ += 32;
            ended_ = true;
            break;
        default:
            corrupt("unknown record tag " + std::to_string(r.tag), at);
        }
        return true;
    }

private:
    std::uint64_t varint() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos_ >= rec_.size()) corrupt("truncated number", pos_);
            const auto byte = static_cast<std::uint8_t>(rec_[pos_++]);
            if (shift == 63 && byte > 1) break;
            v |= std::uint64_t(byte & 0x7f) << shift;
            if (!(byte & 0x80)) return v;
        }
        corrupt("number too large", pos_);
    }

    const std::string& rec_;
    std::size_t pos_ = 0;
    bool ended_ = false;
    bool any_payload_ = false;
    std::uint64_t last_index_ = 0;
    std::string last_name_;
};

}  // namespace

TarSplitWriter::TarSplitWriter() : out_(kMagic) { out_ += static_cast<char>(kTarSplitVersion); }

void TarSplitWriter::flush_literal() {
    if (literal_.empty()) return;
    out_ += static_cast<char>(kLiteral);
    put_varint(out_, literal_.size());
    out_ += literal_;
    literal_.clear();
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
}

void TarSplitWriter::finish(std::uint64_t total_size, const Sha256::Digest& digest) {
    if (finished_) throw Error(ErrorKind::Internal, "tar-split finished twice");
    flush_zeros();
    flush_literal();
    out_ += static_cast<char>(kEnd);
    put_varint(out_, total_size);
    out_.append(reinterpret_cast<const char*>(digest.data()), digest.size());
    finished_ = true;
}

std::string TarSplitWriter::take() {
    if (!finished_) throw Error(ErrorKind::Internal, "tar-split record taken before finish");
    return std::move(out_);
}

TarSplitSummary inspect_tar_split(const std::string& record) {
    TarSplitSummary summary;
    Parser parser(record);
    Record r;
    std::uint64_t total = 0;
    while (parser.next(r)) {
        if (r.tag == kPayload) summary.payloads.push_back(r.payload);
        if (r.tag == kEnd) {
            if (r.count != total) corrupt("sizes do not add up to the recorded total", record.size());
            summary.total_size = r.count;
            summary.digest = "sha256:" + hex(r.digest, 32);
        } else {
            total += r.count;
        }
    }
    return summary;
}

void rebuild_layer_tar(const std::string& tar_split, PayloadStore& payloads, Sink& out) {
    Parser parser(tar_split);
    Sha256 hash;
    std::uint64_t total = 0;
    auto emit = [&](const std::uint8_t* data, std::size_t n) {
        hash.update(data, n);
        out.write(data, n);
        total += n;
    };
    constexpr std::size_t kChunk = std::size_t(1) << 20;
    std::unique_ptr<std::uint8_t[]> buffer;
    static const std::uint8_t zeros[64 * 1024] = {};
    Record r;
    while (parser.next(r)) {
        switch (r.tag) {
        case kLiteral:
            emit(reinterpret_cast<const std::uint8_t*>(r.literal), static_cast<std::size_t>(r.count));
            break;
        case kZeros:
            for (std::uint64_t left = r.count; left > 0;) {
                const std::size_t k = left < sizeof zeros ? static_cast<std::size_t>(left) : sizeof zeros;
                emit(zeros, k);
                left -= k;
            }
            break;
        case kPayload: {
            if (!buffer) buffer.reset(new std::uint8_t[kChunk]);
            std::unique_ptr<Source> src = payloads.open(r.payload.name, r.payload.size);
            std::uint64_t left = r.payload.size;
            while (left > 0) {
                const std::size_t want = left < kChunk ? static_cast<std::size_t>(left) : kChunk;
                const std::size_t got = src->read(buffer.get(), want);
                if (got == 0)
                    throw Error(ErrorKind::StoreCorrupt,
                                "stored payload of tar entry '" + r.payload.name + "' has " +
                                    std::to_string(r.payload.size - left) + " bytes, the tar had " +
                                    std::to_string(r.payload.size));
                emit(buffer.get(), got);
                left -= got;
            }
            if (src->read(buffer.get(), 1) != 0)
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
