// libFuzzer target for the Windows layer semantics: the input is fed, as a layer tar, to
// import_layer_tar (path rules, PAX records, links, whiteouts, streams) and, as raw bytes,
// to every payload decoder (backup stream, EAs, reparse points, security descriptors,
// SDDL). Properties: failures are InvalidLayer only; what the import accepts passes the
// path rules, carries exactly its declared data, and exports and re-imports to the same
// entries; decoded EAs re-encode to what decodes the same; SDDL that converts yields a
// descriptor the binary parser accepts. Build and run: ci/fuzz_tar.sh SECONDS layer_tar.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/backup_stream.hpp"
#include "core/error.hpp"
#include "core/layer_tar.hpp"
#include "core/memory_io.hpp"
#include "core/path_rules.hpp"
#include "core/security_descriptor.hpp"

namespace {

using namespace winlayer;

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
}

using Recorded = MemoryLayerReader::Item;

// Small reads, so that headers and records straddle them.
constexpr std::size_t kChunk = 997;

// Keeps everything and checks the calls it gets.
class RecordingWriter : public LayerWriter {
public:
    void add(const LayerEntry& e) override {
        finish_data();
        std::string file, stream;
        bool is_stream = split_stream_path(e.path, file, stream);
        if (is_stream != (e.type == EntryType::AlternateStream)) violated("stream type and path disagree");
        if (!layer_path_problem(is_stream ? file : e.path).empty()) violated("entry breaks the path rules");
        if (e.type == EntryType::Symlink) decode_reparse_point(e.reparse_data);  // must be valid
        if (!e.security_descriptor.empty()) parse_security_descriptor(e.security_descriptor);
        entries.push_back({e, {}});
        left_ = (e.type == EntryType::File || e.type == EntryType::AlternateStream) ? e.size : 0;
    }
    void write(const std::uint8_t* data, std::size_t n) override {
        if (n > left_) violated("more data than the entry's size");
        left_ -= n;
        entries.back().data.append(reinterpret_cast<const char*>(data), n);
    }
    void add_link(const std::string& path, const std::string& target) override {
        finish_data();
        if (!layer_path_problem(path).empty() || !layer_path_problem(target).empty())
            violated("hard link breaks the path rules");
        LayerEntry e;
        e.path = path;
        e.type = EntryType::HardLink;
        e.link_target = target;
        entries.push_back({e, {}});
    }
    void remove(const std::string& path) override {
        finish_data();
        if (!layer_path_problem(path).empty()) violated("whiteout breaks the path rules");
        LayerEntry e;
        e.path = path;
        e.type = EntryType::Whiteout;
        entries.push_back({e, {}});
    }
    void commit(const CommitInfo&) override {
        finish_data();
        committed = true;
    }
    void abort() noexcept override { aborted = true; }

    std::vector<Recorded> entries;
    bool committed = false;
    bool aborted = false;

private:
    void finish_data() const {
        if (left_ != 0) violated("entry data incomplete");
    }
    std::uint64_t left_ = 0;
};

bool same(const LayerEntry& a, const LayerEntry& b) {
    return a.path == b.path && a.type == b.type && a.attributes == b.attributes && a.times == b.times &&
           a.security_descriptor == b.security_descriptor && a.extended_attributes == b.extended_attributes &&
           a.link_target == b.link_target && a.mount_point == b.mount_point && a.size == b.size;
}

// Only InvalidLayer may come out of hostile input.
template <typename F>
bool clean(F&& fn) {
    try {
        fn();
        return true;
    } catch (const Error& e) {
        if (e.kind != ErrorKind::InvalidLayer) violated("a decoder failed with something else than InvalidLayer");
        return false;
    }
}

class NullHandler : public BackupStreamHandler {};

void import_and_round_trip(const std::uint8_t* data, std::size_t size) {
    MemorySource source(data, size, kChunk);
    RecordingWriter writer;
    ImportOptions options;
    options.allow_parent_links = true;
    if (!clean([&] { import_layer_tar(source, writer, options); })) {
        if (!writer.aborted || writer.committed) violated("a failed import was not aborted");
        return;
    }
    if (!writer.committed) violated("a successful import did not commit");
    // The export of what was imported imports again to the same entries and data.
    StringSink tar;
    MemoryLayerReader reader(writer.entries);
    try {
        export_layer_tar(reader, tar);
    } catch (const Error&) {
        violated("an imported layer does not export");
    }
    MemorySource again(reinterpret_cast<const std::uint8_t*>(tar.out.data()), tar.out.size(), kChunk);
    RecordingWriter second;
    if (!clean([&] { import_layer_tar(again, second, options); })) violated("an exported layer does not import");
    if (second.entries.size() != writer.entries.size()) violated("round trip changed the entry count");
    for (std::size_t i = 0; i < second.entries.size(); ++i)
        if (!same(second.entries[i].entry, writer.entries[i].entry) || second.entries[i].data != writer.entries[i].data)
            violated("round trip changed an entry");
}

void decoders(const std::uint8_t* data, std::size_t size) {
    std::string bytes(reinterpret_cast<const char*>(data), size);
    NullHandler handler;
    BackupStreamDecoder decoder(handler);
    decoder.set_sparse_limit(1 << 20);
    clean([&] {
        for (std::size_t i = 0; i < size; i += 7) decoder.feed(data + i, std::min<std::size_t>(7, size - i));
        decoder.finish();
    });
    clean([&] {
        ExtendedAttributes eas = decode_extended_attributes(bytes);
        if (decode_extended_attributes(encode_extended_attributes(eas)) != eas) violated("EA re-encoding differs");
    });
    clean([&] { decode_reparse_point(bytes); });
    clean([&] { parse_security_descriptor(bytes); });
    std::string sd;
    if (clean([&] { sd = sddl_to_security_descriptor(bytes); }) &&
        !clean([&] { parse_security_descriptor(sd); }))
        violated("converted SDDL is not a valid descriptor");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    import_and_round_trip(data, size);
    decoders(data, size);
    return 0;
}
