// Encoding of winlayer.meta (format in docs/ARCHITECTURE.md, "Portable backend").
//
//   header   "WLLAYER\n", u32 version, u32 section count (2),
//            per section: u64 offset, u64 length, 32-byte SHA-256 of the section
//   section 0: the layer (kind, entries, tombstones, ...), section 1: the tar-split record
//   Sections may lie in either order after the header (an import writes section 1 first).
// Integers little-endian; strings and byte strings are u32 length + bytes. Security
// descriptors are stored once in a table and referenced by index: a layer has few.
#include "metadata.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "../core/error.hpp"
#include "../core/sha256.hpp"
#include "platform.hpp"

namespace winlayer::portable {

namespace {

constexpr char kMagic[8] = {'W', 'L', 'L', 'A', 'Y', 'E', 'R', '\n'};
constexpr std::uint32_t kSections = 2;
constexpr std::size_t kHeaderSize = 8 + 4 + 4 + kSections * (8 + 8 + 32);
constexpr std::uint32_t kNoSd = 0xffffffffu;

// Encoded bytes appended to `s`, or (given a file) written to it in pieces as they come,
// hashed on the way, so that a large layer section is never held whole.
class Out {
public:
    explicit Out(std::string& buffer) : s(buffer) {}
    Out(std::string& buffer, File& file) : s(buffer), file_(&file) {}
    void u8(std::uint8_t v) { s.push_back(static_cast<char>(v)); }
    void u32(std::uint32_t v) {
        for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    }
    void u64(std::uint64_t v) {
        for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    }
    void str(const std::string& v) {
        u32(static_cast<std::uint32_t>(v.size()));
        s += v;
    }
    void bytes(const char* p, std::size_t n) { s.append(p, n); }
    // A point where the bytes so far may go to the file.
    void checkpoint() {
        if (file_ && s.size() >= kFlushBytes) flush();
    }
    // Writes what is left (file mode); the section's length and SHA-256.
    std::pair<std::uint64_t, Sha256::Digest> finish() {
        if (file_) {
            flush();
        } else {
            hash_.update(s.data(), s.size());
            written_ = s.size();
        }
        return {written_, hash_.digest()};
    }
    std::string& s;

private:
    static constexpr std::size_t kFlushBytes = 256 * 1024;
    void flush() {
        hash_.update(s.data(), s.size());
        file_->write(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
        written_ += s.size();
        s.clear();
    }
    File* file_ = nullptr;
    Sha256 hash_;
    std::uint64_t written_ = 0;
};

class In {
public:
    In(const char* p, std::size_t n, const std::string& path) : p_(p), end_(p + n), path_(path) {}
    std::uint8_t u8() { return static_cast<std::uint8_t>(*take(1)); }
    std::uint32_t u32() {
        const char* b = take(4);
        std::uint32_t v = 0;
        for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(b[i]);
        return v;
    }
    std::uint64_t u64() {
        const char* b = take(8);
        std::uint64_t v = 0;
        for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(b[i]);
        return v;
    }
    std::string str() { return std::string(view()); }
    std::string_view view() {
        std::uint32_t n = u32();
        const char* b = take(n);
        return std::string_view(b, n);
    }
    const char* position() const { return p_; }
    // A count of items, each at least `min_item` bytes: bounded by what is left.
    std::uint32_t count(std::size_t min_item) {
        std::uint32_t n = u32();
        if (static_cast<std::size_t>(end_ - p_) / min_item < n) fail("count beyond the end");
        return n;
    }
    bool done() const { return p_ == end_; }
    [[noreturn]] void fail(const std::string& what) const {
        throw Error(ErrorKind::StoreCorrupt, "damaged layer metadata (" + what + ")").with_path(path_);
    }

private:
    const char* take(std::size_t n) {
        if (static_cast<std::size_t>(end_ - p_) < n) fail("truncated");
        const char* b = p_;
        p_ += n;
        return b;
    }
    const char* p_;
    const char* end_;
    const std::string& path_;
};

void encode_entry(Out& o, const EntryRecord& r, std::uint32_t sd) {
    const LayerEntry& e = r.entry;
    o.str(e.path);
    o.u8(static_cast<std::uint8_t>(e.type));
    o.u32(e.attributes);
    o.u64(static_cast<std::uint64_t>(e.times.creation));
    o.u64(static_cast<std::uint64_t>(e.times.last_access));
    o.u64(static_cast<std::uint64_t>(e.times.last_write));
    o.u64(static_cast<std::uint64_t>(e.times.change));
    o.u32(sd);
    o.u32(static_cast<std::uint32_t>(e.extended_attributes.size()));
    for (const auto& ea : e.extended_attributes) {
        o.str(ea.first);
        o.str(ea.second);
    }
    o.str(e.reparse_data);
    o.str(e.link_target);
    o.u8((e.mount_point ? 1 : 0) | (r.parent_link ? 2 : 0));
    o.u64(e.size);
    o.u32(r.group);
    o.u32(static_cast<std::uint32_t>(r.streams.size()));
    for (const auto& st : r.streams) {
        o.str(st.name);
        o.u64(st.size);
        o.u32(st.blob);
    }
}

constexpr std::size_t kMinEntryBytes = 4 + 1 + 4 + 32 + 4 + 4 + 4 + 4 + 1 + 8 + 4 + 4;

template <class Table>
void decode_entry(In& in, const Table& sds, EntryRecord& r) {
    LayerEntry& e = r.entry;
    e.path = in.str();
    std::uint8_t type = in.u8();
    if (type != static_cast<std::uint8_t>(EntryType::Directory) &&
        type != static_cast<std::uint8_t>(EntryType::File) &&
        type != static_cast<std::uint8_t>(EntryType::Symlink))
        in.fail("unknown entry type");
    e.type = static_cast<EntryType>(type);
    e.attributes = in.u32();
    e.times.creation = static_cast<std::int64_t>(in.u64());
    e.times.last_access = static_cast<std::int64_t>(in.u64());
    e.times.last_write = static_cast<std::int64_t>(in.u64());
    e.times.change = static_cast<std::int64_t>(in.u64());
    std::uint32_t sd = in.u32();
    if (sd != kNoSd) {
        if (sd >= sds.size()) in.fail("security descriptor index out of range");
        e.security_descriptor = sds[sd];
    }
    for (std::uint32_t i = 0, k = in.count(8); i < k; ++i) {
        std::string name = in.str();
        e.extended_attributes.emplace_back(std::move(name), in.str());
    }
    e.reparse_data = in.str();
    e.link_target = in.str();
    std::uint8_t flags = in.u8();
    if (flags > 3) in.fail("unknown entry flags");
    e.mount_point = (flags & 1) != 0;
    r.parent_link = (flags & 2) != 0;
    e.size = in.u64();
    r.group = in.u32();
    for (std::uint32_t i = 0, k = in.count(16); i < k; ++i) {
        StreamRecord st;
        st.name = in.str();
        st.size = in.u64();
        st.blob = in.u32();
        r.streams.push_back(std::move(st));
    }
}

void encode_layer(const LayerMeta& m, const EntryTable& entries, Out& o) {
    o.u8(static_cast<std::uint8_t>(m.kind));
    o.u8(m.imported ? 1 : 0);
    o.str(m.diff_id);
    o.u64(m.size);
    o.u64(m.size_limit);
    o.u32(static_cast<std::uint32_t>(m.parents.size()));
    for (const auto& p : m.parents) o.str(p);
    o.u32(entries.security_descriptor_count());
    for (std::uint32_t n = 0; n < entries.security_descriptor_count(); ++n) {
        o.str(entries.security_descriptor(n));
        o.checkpoint();
    }
    o.u32(static_cast<std::uint32_t>(entries.live()));
    entries.visit_encoded([&](std::string_view b) {
        o.bytes(b.data(), b.size());
        o.checkpoint();
    });
    o.u32(static_cast<std::uint32_t>(m.tombstones.size()));
    for (const auto& t : m.tombstones) {
        o.str(t);
        o.checkpoint();
    }
}

EntryTable table_of(const LayerMeta& m) {
    EntryTable t;
    for (const auto& r : m.entries) t.add(r);
    return t;
}

// The layer section's fields before its security-descriptor table.
void decode_head(In& in, LayerMeta& m) {
    std::uint8_t kind = in.u8();
    if (kind > 1) in.fail("unknown layer kind");
    m.kind = static_cast<LayerKind>(kind);
    m.imported = in.u8() != 0;
    m.diff_id = in.str();
    m.size = in.u64();
    m.size_limit = in.u64();
    for (std::uint32_t i = 0, n = in.count(4); i < n; ++i) m.parents.push_back(in.str());
}

LayerMeta decode_layer(In& in) {
    LayerMeta m;
    decode_head(in, m);
    std::vector<std::string> sds;
    for (std::uint32_t i = 0, n = in.count(4); i < n; ++i) sds.push_back(in.str());
    std::uint32_t n = in.count(kMinEntryBytes);
    m.entries.resize(n);
    for (auto& r : m.entries) decode_entry(in, sds, r);
    for (std::uint32_t i = 0, k = in.count(4); i < k; ++i) m.tombstones.push_back(in.str());
    if (!in.done()) in.fail("unexpected bytes after the layer section");
    return m;
}

Sha256::Digest digest_of(const char* p, std::size_t n) {
    Sha256 h;
    h.update(p, n);
    return h.digest();
}

// Checks a metadata file's header (`header`: its first bytes) and returns the offset,
// length and SHA-256 of section `which`, which must lie within the file's `file_size`.
std::tuple<std::uint64_t, std::uint64_t, Sha256::Digest> section(const std::string& header,
                                                                 std::uint64_t file_size,
                                                                 const std::string& path,
                                                                 std::uint32_t which) {
    In in(header.data(), header.size(), path);
    if (header.size() < 8 || std::memcmp(header.data(), kMagic, 8) != 0)
        throw Error(ErrorKind::StoreCorrupt, "not a winlayer layer metadata file").with_path(path);
    for (int i = 0; i < 8; ++i) in.u8();
    std::uint32_t version = in.u32();
    if (version != kMetaVersion)
        throw Error(ErrorKind::StoreCorrupt,
                    "layer metadata version " + std::to_string(version) +
                        " is not supported (this winlayer reads version " +
                        std::to_string(kMetaVersion) + ")")
            .with_path(path);
    if (in.u32() != kSections) in.fail("unexpected section count");
    for (std::uint32_t i = 0; i < kSections; ++i) {
        std::uint64_t off = in.u64();
        std::uint64_t len = in.u64();
        Sha256::Digest want;
        for (auto& b : want) b = in.u8();
        if (i != which) continue;
        if (off < kHeaderSize || off > file_size || len > file_size - off) in.fail("section out of range");
        return {off, len, want};
    }
    in.fail("missing section");
}

std::string meta_path(const std::string& layer_dir) { return join(layer_dir, kMetaFileName); }

}  // namespace

namespace {
const std::string kTableName = "(an import's entry table)";

std::size_t read_fully(File& f, std::uint64_t offset, std::uint8_t* buf, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
        const std::size_t k = f.read_at(offset + got, buf + got, n - got);
        if (k == 0) break;
        got += k;
    }
    return got;
}
}  // namespace

EntryTable::Slot EntryTable::append(const std::string& bytes) {
    constexpr std::size_t kBlockBytes = std::size_t(256) << 10;
    if (blocks_.empty() || blocks_.back().capacity() - blocks_.back().size() < bytes.size()) {
        std::string next;
        if (spill_ && !blocks_.empty()) {  // the full block goes to the file; its buffer is reused
            std::string& full = blocks_.back();
            spill_->write_at(spill_size_, reinterpret_cast<const std::uint8_t*>(full.data()), full.size());
            spilled_.push_back({spill_size_, static_cast<std::uint32_t>(full.size())});
            spill_size_ += full.size();
            next.swap(full);
            next.clear();
        }
        next.reserve(std::max(kBlockBytes, bytes.size()));
        blocks_.push_back(std::move(next));
    }
    std::string& current = blocks_.back();
    Slot slot{static_cast<std::uint32_t>(blocks_.size() - 1), static_cast<std::uint32_t>(current.size()),
              static_cast<std::uint32_t>(bytes.size())};
    current += bytes;
    return slot;
}

EntryTable::Slot EntryTable::encode(const EntryRecord& r) {
    std::uint32_t sd = kNoSd;
    if (const std::string& d = r.entry.security_descriptor; !d.empty()) {
        // Keyed by digest, as names are: a key stands for its bytes.
        auto [it, added] = sd_index_.emplace(bytes_key(d), static_cast<std::uint32_t>(sd_slots_.size()));
        if (added) sd_slots_.push_back(append(d));  // stored once, in the blocks like a record
        sd = it->second;
    }
    scratch_.clear();
    Out o(scratch_);
    encode_entry(o, r, sd);
    return append(scratch_);
}

std::string EntryTable::security_descriptor(std::uint32_t n) const {
    const Slot& s = sd_slots_[n];
    return std::string(std::string_view(block(s.block)).substr(s.offset, s.length));
}

// EntryTable's security descriptors as decode_entry looks them up.
struct EntryTable::SdTable {
    const EntryTable& t;
    std::size_t size() const { return t.sd_slots_.size(); }
    std::string operator[](std::size_t n) const { return t.security_descriptor(static_cast<std::uint32_t>(n)); }
};

const std::string& EntryTable::block(std::uint32_t b) const {
    if (b >= spilled_.size()) return blocks_[b];  // not spilled (blocks spill in order)
    if (cached_[0] == b) return cache_[0];
    if (cached_[1] != b) {
        cache_[1].resize(spilled_[b].size);
        if (read_fully(*spill_, spilled_[b].offset, reinterpret_cast<std::uint8_t*>(&cache_[1][0]),
                       cache_[1].size()) != cache_[1].size())
            throw Error(ErrorKind::Internal, "an import's entry table file is shorter than written");
        cached_[1] = b;
    }
    std::swap(cache_[0], cache_[1]);
    std::swap(cached_[0], cached_[1]);
    return cache_[0];
}

std::string_view EntryTable::bytes(std::size_t i) const {
    const Slot& s = slots_[i];
    return std::string_view(block(s.block)).substr(s.offset, s.length);
}

std::size_t EntryTable::add(const EntryRecord& r) {
    slots_.push_back(encode(r));
    ++live_;
    return slots_.size() - 1;
}

void EntryTable::replace(std::size_t i, const EntryRecord& r) {
    const bool was_removed = slots_[i].removed;
    slots_[i] = encode(r);
    slots_[i].removed = was_removed;
}

void EntryTable::remove(std::size_t i) {
    if (slots_[i].removed) return;
    slots_[i].removed = true;
    --live_;
}

EntryRecord EntryTable::decode(std::string_view b) const {
    const std::string copy(b);  // reading the security descriptor may replace b's block
    In in(copy.data(), copy.size(), kTableName);
    EntryRecord r;
    decode_entry(in, SdTable{*this}, r);
    return r;
}

EntryRecord EntryTable::get(std::size_t i) const { return decode(bytes(i)); }

std::string EntryTable::path(std::size_t i) const {
    std::string_view b = bytes(i);
    In in(b.data(), b.size(), kTableName);
    return in.str();
}

void EntryTable::visit_encoded(const std::function<void(std::string_view)>& visit) const {
    for (std::size_t i = 0; i < slots_.size(); ++i)
        if (!slots_[i].removed) visit(bytes(i));
}

void EntryTable::visit(const std::function<void(const EntryRecord&)>& visit) const {
    visit_encoded([&](std::string_view b) { visit(decode(b)); });
}

namespace {
struct SectionInfo {
    std::uint64_t offset = 0, length = 0;
    Sha256::Digest digest{};
};

std::string meta_header(const SectionInfo (&sections)[kSections]) {
    std::string header;
    Out o(header);
    o.s.append(kMagic, 8);
    o.u32(kMetaVersion);
    o.u32(kSections);
    for (const auto& sec : sections) {
        o.u64(sec.offset);
        o.u64(sec.length);
        o.bytes(reinterpret_cast<const char*>(sec.digest.data()), sec.digest.size());
    }
    return header;
}
}  // namespace

std::string encode_meta(const LayerMeta& meta, const std::string& tar_split) {
    std::string bytes;
    Out layer(bytes);
    encode_layer(meta, table_of(meta), layer);
    const auto [length, digest] = layer.finish();
    const SectionInfo sections[kSections] = {
        {kHeaderSize, length, digest},
        {kHeaderSize + length, tar_split.size(), digest_of(tar_split.data(), tar_split.size())}};
    return meta_header(sections) + bytes + tar_split;
}

MetaFileWriter::MetaFileWriter(File file) : file_(std::move(file)) {
    const std::string placeholder(kHeaderSize, '\0');  // the header is known at the end
    file_.write(reinterpret_cast<const std::uint8_t*>(placeholder.data()), placeholder.size());
}

void MetaFileWriter::write(const std::uint8_t* data, std::size_t n) {
    split_hash_.update(data, n);
    split_size_ += n;
    file_.write(data, n);
}

void MetaFileWriter::finish(const LayerMeta& meta, const EntryTable& entries) {
    std::string buffer;
    Out layer(buffer, file_);
    encode_layer(meta, entries, layer);
    const auto [length, digest] = layer.finish();
    const SectionInfo sections[kSections] = {{kHeaderSize + split_size_, length, digest},
                                             {kHeaderSize, split_size_, split_hash_.digest()}};
    const std::string header = meta_header(sections);
    file_.write_at(0, reinterpret_cast<const std::uint8_t*>(header.data()), header.size());
    file_.close();
}

namespace {
// winlayer.meta opened, its header checked: where section `which` lies and its SHA-256.
struct OpenSection {
    File file;
    std::uint64_t offset = 0, length = 0;
    Sha256::Digest digest{};
};

OpenSection open_section(const std::string& layer_dir, std::uint32_t which) {
    const std::string path = meta_path(layer_dir);
    if (stat_path(path).kind != NodeKind::File)
        throw Error(ErrorKind::StoreCorrupt, "layer metadata file is missing").with_path(path);
    Tree dir(layer_dir);
    OpenSection s{dir.open_read(kMetaFileName)};
    std::string header(kHeaderSize, '\0');
    header.resize(read_fully(s.file, 0, reinterpret_cast<std::uint8_t*>(&header[0]), header.size()));
    std::tie(s.offset, s.length, s.digest) = section(header, s.file.stat().size, path, which);
    return s;
}

[[noreturn]] void checksum_mismatch(const std::string& path) {
    throw Error(ErrorKind::StoreCorrupt, "damaged layer metadata (checksum mismatch)").with_path(path);
}

// Section `which`, read whole and verified; only its bytes are read (an imported layer's
// tar-split section is not needed to list its entries).
std::string read_section(const std::string& layer_dir, std::uint32_t which) {
    OpenSection s = open_section(layer_dir, which);
    std::string bytes(static_cast<std::size_t>(s.length), '\0');
    bytes.resize(read_fully(s.file, s.offset, reinterpret_cast<std::uint8_t*>(&bytes[0]), bytes.size()));
    if (bytes.size() != s.length || digest_of(bytes.data(), bytes.size()) != s.digest)
        checksum_mismatch(meta_path(layer_dir));
    return bytes;
}

// Bytes of a layer section that hold its head (a chain of thousands of parents at most).
constexpr std::size_t kHeadBytes = std::size_t(1) << 20;

// A section as a stream, hashed as it is read and checked at its end.
class SectionSource : public Source {
public:
    SectionSource(OpenSection s, std::string path) : s_(std::move(s)), path_(std::move(path)) {}
    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        const std::uint64_t left = s_.length - done_;
        if (left == 0) {
            if (!checked_ && hash_.digest() != s_.digest) checksum_mismatch(path_);
            checked_ = true;
            return 0;
        }
        const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n, left));
        const std::size_t got = s_.file.read_at(s_.offset + done_, buf, want);
        if (got == 0) checksum_mismatch(path_);  // shorter than its header says
        hash_.update(buf, got);
        done_ += got;
        return got;
    }

private:
    OpenSection s_;
    std::string path_;
    Sha256 hash_;
    std::uint64_t done_ = 0;
    bool checked_ = false;
};
}  // namespace

std::unique_ptr<Source> open_tar_split(const std::string& layer_dir) {
    return std::make_unique<SectionSource>(open_section(layer_dir, 1), meta_path(layer_dir));
}

LayerMeta read_meta(const std::string& layer_dir) {
    const std::string bytes = read_section(layer_dir, 0);
    In in(bytes.data(), bytes.size(), meta_path(layer_dir));
    return decode_layer(in);
}

LayerMeta read_meta_head(const std::string& layer_dir) {
    // The head is decoded from the section's first bytes; the rest is only read through
    // for the checksum (a large layer's section is not held for a look at its kind).
    const std::string path = meta_path(layer_dir);
    SectionSource src(open_section(layer_dir, 0), path);
    std::string first(kHeadBytes, '\0');
    std::size_t got = 0;
    while (got < first.size()) {
        const std::size_t k = src.read(reinterpret_cast<std::uint8_t*>(&first[got]), first.size() - got);
        if (k == 0) break;
        got += k;
    }
    first.resize(got);
    std::uint8_t rest[64 * 1024];
    while (src.read(rest, sizeof rest) != 0) {
    }
    In in(first.data(), first.size(), path);
    LayerMeta m;
    decode_head(in, m);
    return m;
}

StoredEntries::StoredEntries(const std::string& layer_dir,
                             const std::function<void(std::size_t, const EntryRecord&)>& each)
    : bytes_(read_section(layer_dir, 0)), path_(meta_path(layer_dir)) {
    In in(bytes_.data(), bytes_.size(), path_);
    LayerMeta head;
    decode_head(in, head);
    for (std::uint32_t i = 0, n = in.count(4); i < n; ++i) sds_.push_back(in.view());
    const std::uint32_t n = in.count(kMinEntryBytes);
    offsets_.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) {
        offsets_.push_back(static_cast<std::uint64_t>(in.position() - bytes_.data()));
        EntryRecord r;
        decode_entry(in, sds_, r);  // every record is checked now, not when its turn comes
        if (each) each(i, r);
    }
    for (std::uint32_t i = 0, k = in.count(4); i < k; ++i) tombstones_.push_back(in.str());
    if (!in.done()) in.fail("unexpected bytes after the layer section");
}

std::string StoredEntries::path(std::size_t i) const {
    In in(bytes_.data() + offsets_[i], bytes_.size() - offsets_[i], path_);
    return in.str();
}

EntryRecord StoredEntries::get(std::size_t i) const {
    In in(bytes_.data() + offsets_[i], bytes_.size() - offsets_[i], path_);
    EntryRecord r;
    decode_entry(in, sds_, r);
    return r;
}

void write_meta(const std::string& layer_dir, const LayerMeta& meta, const std::string& tar_split) {
    write_file_atomic(meta_path(layer_dir), encode_meta(meta, tar_split));
}

}  // namespace winlayer::portable
