// Layer tar <-> LayerEntry, with go-winio backuptar's semantics (REFERENCE.md section 4).
//
// Import, per tar entry (after the path rules of path_rules.hpp):
//   type 5 -> Directory, 0 -> File, 2 -> Symlink (reparse data built from linkname, '/'
//   turned into '\\'; MSWINDOWS.mountpoint makes it a junction), 1 -> add_link (the
//   target passes the same path rules; in this layer it must be a file, else the writer
//   looks in the parents, or it is an error when allow_parent_links is off),
//   "<dir>/.wh.<name>" of any type -> remove("<dir>/<name>") (".wh..wh..opq" too: a
//   tombstone of ".wh..opq"; a repeated whiteout is dropped), "<file>:<stream>" ->
//   AlternateStream (only right after its file or directory).
//   PAX records: MSWINDOWS.fileattr (decimal), MSWINDOWS.rawsd (base64, validated; empty:
//   none), MSWINDOWS.sd (SDDL subset, used when there is no rawsd), MSWINDOWS.xattr.<name>
//   (base64; an empty name is dropped), LIBARCHIVE.creationtime, mtime/atime/ctime
//   (clamped to FILETIME's range); MSWINDOWS.mountpoint off a symlink and other records
//   are ignored. Values are read as go-winio reads them (Go's base64, ParseUint,
//   parsePAXTime) and exported in canonical form.
//   Defaults when a record is missing: attributes 16 (directory), 32 (file), 0x420 (file
//   symlink) or 0x410 (junction); creation, access and change times = mtime; no
//   security descriptor (the backend's default applies).
//   Consistency: a directory's attributes must have FILE_ATTRIBUTE_DIRECTORY, a file's
//   must not; a symlink always gets FILE_ATTRIBUTE_REPARSE_POINT.
//   Rejected: whiteouts with data, a name that collides case-insensitively with an
//   earlier one (including a path both whited out and added), malformed values of the
//   records above (docs/ARCHITECTURE.md lists every refusal and why).
// Export writes the canonical form: the same records, PAX keys sorted (TarWriter), times
// exact to the 100 ns tick, whiteouts and alternate streams and hard links as bare ustar
// entries, directory names without a trailing '/' (hcsshim's form).
#include "layer_tar.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <vector>

#include "backup_stream.hpp"
#include "encoding.hpp"
#include "error.hpp"
#include "path_rules.hpp"
#include "security_descriptor.hpp"
#include "tar.hpp"
#include "tar_split.hpp"

namespace winlayer {

namespace {

constexpr std::uint32_t kAttrDirectory = 0x10;
constexpr std::uint32_t kAttrArchive = 0x20;
constexpr std::uint32_t kAttrReparsePoint = 0x400;

constexpr std::int64_t kTicksPerSecond = 10000000;
constexpr std::int64_t kEpochDeltaSeconds = 11644473600;  // 1601-01-01 -> 1970-01-01
constexpr std::uint64_t kProgressEvery = std::uint64_t(8) << 20;

const std::string kWhiteoutPrefix = ".wh.";
const std::string kXattrPrefix = "MSWINDOWS.xattr.";

// TarTime -> FILETIME ticks, clamped to what a FILETIME holds: 0 (1601-01-01) for earlier
// times, INT64_MAX (year 30828) for later ones. hcsshim's conversion (through Go's
// UnixNano) wraps around outside 1678-2262, so there is no other reading to keep.
std::int64_t to_filetime(const TarTime& t) {
    constexpr std::int64_t max_sec = std::numeric_limits<std::int64_t>::max() / kTicksPerSecond - kEpochDeltaSeconds - 1;
    if (t.sec < -kEpochDeltaSeconds) return 0;
    if (t.sec > max_sec) return std::numeric_limits<std::int64_t>::max();
    return (t.sec + kEpochDeltaSeconds) * kTicksPerSecond + static_cast<std::int64_t>(t.nsec / 100);
}

TarTime from_filetime(std::int64_t ticks) {
    std::int64_t sec = ticks / kTicksPerSecond;
    std::int64_t rem = ticks % kTicksPerSecond;
    if (rem < 0) {
        rem += kTicksPerSecond;
        --sec;
    }
    return TarTime{sec - kEpochDeltaSeconds, static_cast<std::uint32_t>(rem * 100)};
}

// Decimal as Go's strconv.ParseUint(v, 10, 32) reads it: digits only, leading zeros
// allowed.
bool parse_u32(const std::string& v, std::uint32_t& out) {
    if (v.empty()) return false;
    std::size_t significant = v.size() - std::min(v.find_first_not_of('0'), v.size() - 1);
    if (significant > 10) return false;
    std::uint64_t x = 0;
    for (char c : v) {
        if (c < '0' || c > '9') return false;
        x = x * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (x > 0xffffffffULL) return false;
    out = static_cast<std::uint32_t>(x);
    return true;
}

// Why an entry's attributes contradict its type (import and export refuse both), or "".
std::string attributes_problem(const LayerEntry& e) {
    bool dir = (e.attributes & kAttrDirectory) != 0;
    switch (e.type) {
    case EntryType::Directory:
        return dir ? "" : "a directory without FILE_ATTRIBUTE_DIRECTORY";
    case EntryType::File:
        return dir ? "a file with FILE_ATTRIBUTE_DIRECTORY" : "";
    case EntryType::Symlink:
        if (!(e.attributes & kAttrReparsePoint)) return "a symlink without FILE_ATTRIBUTE_REPARSE_POINT";
        return e.mount_point && !dir ? "a junction without FILE_ATTRIBUTE_DIRECTORY" : "";
    default:
        return "";
    }
}

std::string base_name(const std::string& path) {
    std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string parent_of(const std::string& path) {
    std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

}  // namespace

// --- import ---------------------------------------------------------------------------

struct LayerTarImporter::State {
    State(Source& tar, LayerWriter& w, const ImportOptions& o)
        : reader(tar, o.record_tar_split ? &split : nullptr), writer(w), options(o) {
        if (o.record_tar_split) split.stream_to(w.tar_split_sink());
        // commit() checks the digest: a stream that ends after an entry is then the layer.
        if (!o.expected_digest.empty()) reader.accept_missing_end();
        if (o.hash_in_background) reader.hash_in_background();
    }

    TarSplitWriter split;
    TarReader reader;
    LayerWriter& writer;
    const ImportOptions& options;
    LayerNames names;
    TarHeader header;
    LayerEntry entry;
    std::string name;          // the entry's name, for errors
    std::string stream_owner;  // the last file or directory: its streams may follow
    struct RawsdSlot {
        bool valid = false;
        std::string text;   // a valid MSWINDOWS.rawsd value
        std::string bytes;  // its descriptor
    };
    std::array<RawsdSlot, 64> rawsd_cache;
    std::uint64_t data_size = 0;
    std::uint64_t next_progress = kProgressEvery;
    bool finished = false;  // the end of the tar was reached
    bool parents_ready = false;  // options.wait_for_parents has returned (or is not set)
    bool closed = false;    // the writer was committed or aborted: no more calls to it

    [[noreturn]] void invalid(const std::string& message) const {
        throw Error::invalid_layer(message, name, static_cast<std::int64_t>(header.offset));
    }

    // Runs a decoder of a record's value; its errors name the record and this entry.
    template <typename F>
    auto decode(const char* record, F&& fn) -> decltype(fn()) {
        try {
            return fn();
        } catch (const Error& e) {
            if (e.kind != ErrorKind::InvalidLayer) throw;
            invalid(std::string(record) + ": " + e.message);
        }
    }

    // Records `path`; false when it repeats an earlier whiteout (a whiteout again: the same
    // tombstone, as hcsshim writes it twice). Any other repeat is an error.
    bool add_name(const std::string& path, LayerNames::Kind kind) {
        LayerNames::Kind previous;
        if (names.add(path, kind, &previous)) return true;
        if (kind == LayerNames::Kind::Whiteout && previous == LayerNames::Kind::Whiteout) return false;
        invalid(std::string("name collides with an earlier ") + layer_name_kind(previous) +
                " of this layer (Windows names are case-insensitive)");
    }

    // First of all: every later step costs more with the length of the path.
    void check_length(const std::string& path, const std::string& what) const {
        std::string problem = path_length_problem(path);
        if (!problem.empty()) invalid(what + ": " + problem);
    }

    void check_path(const std::string& path, const std::string& what) const {
        std::string problem = layer_path_problem(path);
        if (!problem.empty()) invalid(what + ": " + problem);
    }

    void need_parents() {
        if (parents_ready) return;
        if (options.wait_for_parents) options.wait_for_parents();
        parents_ready = true;
    }

    bool step();
    void handle();
    void whiteout(const std::string& dir, const std::string& base);
    void stream(const std::string& file, const std::string& stream_name);
    void hard_link();
    void metadata();
    void pump();
    void progress();
};

bool LayerTarImporter::State::step() {
    if (finished) return false;
    if (!reader.next(header)) {
        finished = true;
        progress();
        return false;
    }
    name = header.name;
    handle();
    progress();
    return true;
}

void LayerTarImporter::State::progress() {
    if (!options.progress) return;
    if (finished || reader.offset() >= next_progress) {
        options.progress(reader.offset());
        next_progress = reader.offset() + kProgressEvery;
    }
}

void LayerTarImporter::State::handle() {
    std::string path = header.name;
    if (header.type == tar_type::kDirectory && !path.empty() && path.back() == '/') path.pop_back();
    if (path.empty()) invalid("empty name");
    check_length(path, "invalid path");
    // The Windows writer starts a delta layer's utility VM as a clone of the parent's.
    if (path.compare(0, 9, "UtilityVM") == 0 && (path.size() == 9 || path[9] == '/')) need_parents();

    std::string base = base_name(path);
    if (base.compare(0, kWhiteoutPrefix.size(), kWhiteoutPrefix) == 0) {
        whiteout(parent_of(path), base);
        stream_owner.clear();
        return;
    }
    std::string file, stream_name;
    if (split_stream_path(path, file, stream_name)) {
        stream(file, stream_name);
        return;
    }
    check_path(path, "invalid path");

    entry = LayerEntry{};
    entry.path = path;
    switch (header.type) {
    case tar_type::kDirectory:
        entry.type = EntryType::Directory;
        break;
    case tar_type::kFile:
        entry.type = EntryType::File;
        entry.size = header.size;
        break;
    case tar_type::kSymlink:
        entry.type = EntryType::Symlink;
        break;
    case tar_type::kHardLink:
        hard_link();
        stream_owner.clear();
        return;
    default:
        invalid(std::string("unsupported entry type '") + header.type + "'");
    }
    if (path.find('/') == std::string::npos && entry.type != EntryType::Directory)
        invalid("a top-level folder entry must be a directory");
    metadata();
    add_name(path, entry.type == EntryType::Directory ? LayerNames::Kind::Directory
                   : entry.type == EntryType::File    ? LayerNames::Kind::File
                                                      : LayerNames::Kind::Symlink);
    try {
        writer.add(entry);
    } catch (Error& e) {
        e.at_entry(name, static_cast<std::int64_t>(header.offset));
        throw;
    }
    stream_owner = entry.type == EntryType::Symlink ? std::string() : path;
    if (entry.type == EntryType::File) pump();
}

// As hcsshim's importer: the name alone makes a whiteout (the entry type is ignored), and
// it deletes the name with ".wh." stripped. An opaque whiteout, "<dir>/.wh..wh..opq", is
// thus a tombstone of "<dir>/.wh..opq", a name no layer tar can add: it hides nothing,
// since Windows importers do not implement opaque directories, and exports as it came.
void LayerTarImporter::State::whiteout(const std::string& dir, const std::string& base) {
    // Its data would have no place in the layer, which the original export is rebuilt from.
    if (header.size != 0) invalid("a whiteout carries data");
    if (dir.empty()) invalid("whiteout of a top-level folder");
    std::string target = dir + "/" + base.substr(kWhiteoutPrefix.size());
    check_path(target, "invalid whiteout target");
    if (!add_name(target, LayerNames::Kind::Whiteout)) return;
    try {
        writer.remove(target);
    } catch (Error& e) {
        e.at_entry(name, static_cast<std::int64_t>(header.offset));
        throw;
    }
}

void LayerTarImporter::State::stream(const std::string& file, const std::string& stream_name) {
    if (!file.empty() && file.back() == '/') {
        // "Files/d/:s": hcsshim attaches it to folder d, other readers make a file ":s" in d.
        std::string dir = file.substr(0, file.size() - 1);
        invalid("ambiguous stream name: a stream of folder '" + dir + "' is named '" + dir + ":" +
                stream_name + "' (after a '/', tar readers see a file named ':" + stream_name +
                "' inside the folder)");
    }
    check_path(file, "invalid path");
    std::string problem = stream_name_problem(stream_name);
    if (!problem.empty()) invalid(problem);
    if (header.type != tar_type::kFile) invalid("an alternate data stream must be a regular file entry");
    if (stream_owner.empty() || stream_owner != file)
        invalid("an alternate data stream must follow its file ('" + file + "')");
    add_name(header.name, LayerNames::Kind::Stream);
    entry = LayerEntry{};
    entry.path = header.name;
    entry.type = EntryType::AlternateStream;
    entry.size = header.size;
    try {
        writer.add(entry);
    } catch (Error& e) {
        e.at_entry(name, static_cast<std::int64_t>(header.offset));
        throw;
    }
    pump();
}

void LayerTarImporter::State::hard_link() {
    const std::string& target = header.linkname;
    check_length(target, "invalid hard link target");
    check_path(target, "invalid hard link target '" + target + "'");
    const LayerNames::Kind* kind = names.find(target);
    if (kind) {
        if (*kind != LayerNames::Kind::File && *kind != LayerNames::Kind::HardLink)
            invalid(std::string("hard link to a ") + layer_name_kind(*kind) + " ('" + target + "')");
    } else if (!options.allow_parent_links) {
        invalid("hard link target '" + target + "' is not in this layer");
    } else {
        need_parents();
    }
    add_name(entry.path, LayerNames::Kind::HardLink);
    try {
        writer.add_link(entry.path, target);
    } catch (Error& e) {
        e.at_entry(name, static_cast<std::int64_t>(header.offset));
        throw;
    }
}

void LayerTarImporter::State::metadata() {
    bool have_attributes = false;
    bool have_creation = false;
    bool have_rawsd = false;
    bool mount_point = false;
    const std::string* sddl = nullptr;
    for (const PaxRecord& r : header.pax) {
        const std::string& k = r.key;
        if (k.compare(0, 10, "MSWINDOWS.") != 0 && k != "LIBARCHIVE.creationtime") continue;
        if (k == "MSWINDOWS.fileattr") {
            if (!parse_u32(r.value, entry.attributes)) invalid("MSWINDOWS.fileattr is not a 32-bit decimal number");
            have_attributes = true;
        } else if (k == "MSWINDOWS.rawsd") {
            have_rawsd = true;
            if (r.value.empty()) {  // go-winio decodes it to no descriptor
                entry.security_descriptor.clear();
                continue;
            }
            // Entries of a layer share a few descriptors: a small direct-mapped cache
            // decodes and checks each value once (and costs little when they all differ).
            RawsdSlot& slot = rawsd_cache[std::hash<std::string>{}(r.value) % rawsd_cache.size()];
            if (!slot.valid || slot.text != r.value) {
                slot.valid = false;
                if (!base64_decode(r.value, slot.bytes)) invalid("MSWINDOWS.rawsd is not valid base64");
                decode("MSWINDOWS.rawsd", [&] { check_security_descriptor(slot.bytes); });
                slot.text = r.value;
                slot.valid = true;
            }
            entry.security_descriptor = slot.bytes;
        } else if (k == "MSWINDOWS.sd") {
            sddl = &r.value;
        } else if (k == "MSWINDOWS.mountpoint") {
            mount_point = true;
        } else if (k.compare(0, kXattrPrefix.size(), kXattrPrefix) == 0) {
            std::string ea_name = k.substr(kXattrPrefix.size());
            if (ea_name.size() > 255) invalid("extended attribute name longer than 255 bytes in '" + k + "'");
            std::string value;
            if (!base64_decode(r.value, value)) invalid(k + " is not valid base64");
            if (value.size() > 0xffff) invalid(k + " is longer than 65535 bytes");
            // No file can hold an EA without a name (NTFS refuses to set one): dropped.
            if (ea_name.empty()) continue;
            auto& eas = entry.extended_attributes;
            auto it = std::find_if(eas.begin(), eas.end(), [&](const auto& ea) { return ea.first == ea_name; });
            if (it != eas.end()) {
                it->second = std::move(value);  // a later record overrides, as in PAX
            } else {
                eas.emplace_back(std::move(ea_name), std::move(value));
            }
        } else if (k == "LIBARCHIVE.creationtime") {
            TarTime t;
            if (!parse_pax_time(r.value, t)) invalid("LIBARCHIVE.creationtime is not a PAX time ([+-]sec[.fraction])");
            entry.times.creation = to_filetime(t);
            have_creation = true;
        }
    }
    if (sddl && !have_rawsd)
        entry.security_descriptor = decode("MSWINDOWS.sd", [&] { return sddl_to_security_descriptor(*sddl); });

    entry.times.last_write = to_filetime(header.mtime);
    if (!have_creation) entry.times.creation = entry.times.last_write;
    entry.times.last_access = header.atime ? to_filetime(*header.atime) : entry.times.last_write;
    entry.times.change = header.ctime ? to_filetime(*header.ctime) : entry.times.last_write;

    if (entry.type == EntryType::Symlink) {
        entry.link_target = header.linkname;
        std::replace(entry.link_target.begin(), entry.link_target.end(), '/', '\\');
        entry.mount_point = mount_point;
        entry.reparse_data = decode("symlink target", [&] {
            try {
                return encode_reparse_point(entry.link_target, mount_point);
            } catch (const Error& e) {  // InvalidArgument from the encoder: bad target
                throw Error::invalid_layer(e.message, name, static_cast<std::int64_t>(header.offset));
            }
        });
        if (!have_attributes) entry.attributes = mount_point ? kAttrDirectory : kAttrArchive;
        entry.attributes |= kAttrReparsePoint;
    } else {
        // MSWINDOWS.mountpoint is ignored here: go-winio reads it only for symlinks.
        if (!have_attributes) entry.attributes = entry.type == EntryType::Directory ? kAttrDirectory : kAttrArchive;
    }
    std::string problem = attributes_problem(entry);
    if (!problem.empty()) invalid("MSWINDOWS.fileattr: " + problem);
}

void LayerTarImporter::State::pump() {
    const std::uint8_t* data;
    while (std::size_t n = reader.read_view(data)) {
        try {
            writer.write(data, n);
        } catch (Error& e) {
            e.at_entry(name, static_cast<std::int64_t>(header.offset));
            throw;
        }
        data_size += n;
    }
}

LayerTarImporter::LayerTarImporter(Source& tar, LayerWriter& writer, const ImportOptions& options) {
    const std::string& d = options.expected_digest;
    if (!d.empty()) {
        bool ok = d.size() == 71 && d.compare(0, 7, "sha256:") == 0 &&
                  std::all_of(d.begin() + 7, d.end(), [](char c) {
                      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                  });
        if (!ok) throw Error(ErrorKind::InvalidArgument, "expected digest must be 'sha256:' + 64 lowercase hex digits")
            .with_path(d);
    }
    state_ = std::make_unique<State>(tar, writer, options);
}

LayerTarImporter::~LayerTarImporter() {
    if (state_ && !state_->closed) state_->writer.abort();
}

bool LayerTarImporter::step() {
    State& s = *state_;
    if (s.closed) throw Error(ErrorKind::Internal, "step() after the import was committed or aborted");
    try {
        return s.step();
    } catch (Error& e) {
        s.closed = true;
        s.writer.abort();
        if (e.kind == ErrorKind::InvalidLayer) e.at_entry(s.reader.current_name(), static_cast<std::int64_t>(s.reader.offset()));
        throw;
    } catch (...) {
        s.closed = true;
        s.writer.abort();
        throw;
    }
}

CommitInfo LayerTarImporter::commit() {
    State& s = *state_;
    if (!s.finished || s.closed) throw Error(ErrorKind::Internal, "commit() before the end of the layer tar");
    CommitInfo info;
    info.diff_id = s.reader.diff_id();
    info.size = s.data_size;
    s.closed = true;
    try {
        const std::string& expected = s.options.expected_digest;
        if (!expected.empty() && expected != info.diff_id) throw Error::digest_mismatch(expected, info.diff_id);
        if (s.options.record_tar_split) info.tar_split = s.split.take();
        s.need_parents();
        if (s.options.layer_files) info.layer_files = s.options.layer_files(info);
        s.writer.commit(info);
    } catch (...) {
        s.writer.abort();
        throw;
    }
    return info;
}

CommitInfo import_layer_tar(Source& tar, LayerWriter& writer, const ImportOptions& options) {
    LayerTarImporter importer(tar, writer, options);
    while (importer.step()) {
    }
    return importer.commit();
}

// --- export ---------------------------------------------------------------------------

namespace {

class Exporter {
public:
    Exporter(LayerReader& reader, Sink& out) : reader_(reader), writer_(out) {}

    void run() {
        LayerEntry e;
        while (reader_.next(e)) {
            entry_ = &e;
            TarHeader h;
            convert(e, h);
            check_length(h);
            writer_.add(h);
            if (h.type == tar_type::kFile && h.size > 0) copy_data(e);
        }
        writer_.finish();
    }

private:
    [[noreturn]] void invalid(const std::string& message) const {
        throw Error::invalid_layer("cannot export: " + message, entry_->path,
                                   static_cast<std::int64_t>(writer_.bytes_written()));
    }

    void check(const std::string& path) const {
        std::string problem = layer_path_problem(path);
        if (!problem.empty()) invalid(problem);
    }

    // The import's first check: the tar name (a folder's without its '/'), a hard link's target.
    void check_length(const TarHeader& h) const {
        std::string problem = path_length_problem(h.type == tar_type::kDirectory ? entry_->path : h.name);
        if (problem.empty() && h.type == tar_type::kHardLink) problem = path_length_problem(h.linkname);
        if (!problem.empty()) invalid(problem);
    }

    void times(const LayerEntry& e, TarHeader& h) const {
        h.mtime = from_filetime(e.times.last_write);
        h.atime = from_filetime(e.times.last_access);
        h.ctime = from_filetime(e.times.change);
        h.pax.push_back({"LIBARCHIVE.creationtime", format_pax_time(from_filetime(e.times.creation))});
    }

    void windows_records(const LayerEntry& e, TarHeader& h) {
        std::string problem = attributes_problem(e);
        if (!problem.empty()) invalid(problem);
        h.pax.push_back({"MSWINDOWS.fileattr", std::to_string(e.attributes)});
        if (!e.security_descriptor.empty()) {
            if (e.security_descriptor != rawsd_) {  // entries mostly share one descriptor
                try {
                    check_security_descriptor(e.security_descriptor);
                } catch (const Error& err) {
                    invalid(err.message);
                }
                rawsd_ = e.security_descriptor;
                rawsd_text_ = base64_encode(rawsd_);
            }
            h.pax.push_back({"MSWINDOWS.rawsd", rawsd_text_});
        }
        for (const auto& [ea_name, value] : e.extended_attributes) {
            if (ea_name.empty() || ea_name.size() > 255 || ea_name.find('\0') != std::string::npos ||
                ea_name.find('=') != std::string::npos)
                invalid("bad extended attribute name '" + ea_name + "'");
            h.pax.push_back({kXattrPrefix + ea_name, base64_encode(value)});
        }
    }

    void convert(const LayerEntry& e, TarHeader& h) {
        switch (e.type) {
        case EntryType::Directory:
            check(e.path);
            // No trailing '/', as hcsshim writes it: go-winio's importer attaches a stream
            // only when its name starts with the header's name plus ':'.
            h.name = e.path;
            h.type = tar_type::kDirectory;
            h.mode = 040000;
            times(e, h);
            windows_records(e, h);
            stream_owner_ = e.path;
            return;
        case EntryType::File:
            check(e.path);
            h.name = e.path;
            h.type = tar_type::kFile;
            h.mode = 0100000;
            h.size = e.size;
            times(e, h);
            windows_records(e, h);
            stream_owner_ = e.path;
            return;
        case EntryType::Symlink: {
            check(e.path);
            ReparsePoint rp{e.link_target, e.mount_point, false};
            if (!e.reparse_data.empty()) {
                try {
                    rp = decode_reparse_point(e.reparse_data);
                } catch (const Error& err) {
                    invalid(err.message);
                }
            }
            if (rp.target.empty()) invalid("symlink without a target");
            h.name = e.path;
            h.linkname = rp.target;
            h.type = tar_type::kSymlink;
            h.mode = 0120000;
            times(e, h);
            windows_records(e, h);
            if (rp.mount_point) h.pax.push_back({"MSWINDOWS.mountpoint", "1"});
            stream_owner_.clear();
            return;
        }
        case EntryType::AlternateStream: {
            std::string file, stream_name;
            if (!split_stream_path(e.path, file, stream_name)) invalid("alternate stream path without ':'");
            check(file);
            std::string problem = stream_name_problem(stream_name);
            if (!problem.empty()) invalid(problem);
            if (file != stream_owner_) invalid("alternate stream does not follow its file");
            h.name = e.path;
            h.type = tar_type::kFile;
            h.mode = 0100000;
            h.size = e.size;
            return;
        }
        case EntryType::HardLink:
            check(e.path);
            check(e.link_target);
            h.name = e.path;
            h.linkname = e.link_target;
            h.type = tar_type::kHardLink;
            h.mode = 0100000;
            stream_owner_.clear();
            return;
        case EntryType::Whiteout: {
            check(e.path);
            std::string dir = parent_of(e.path);
            if (dir.empty()) invalid("whiteout of a top-level folder");
            h.name = dir + "/" + kWhiteoutPrefix + base_name(e.path);
            h.type = tar_type::kFile;
            h.mode = 0;
            stream_owner_.clear();
            return;
        }
        }
        invalid("unknown entry type");
    }

    void copy_data(const LayerEntry& e) {
        std::vector<std::uint8_t>& buf = buffer_;
        if (buf.empty()) buf.resize(std::size_t(1) << 20);
        std::uint64_t left = e.size;
        while (left > 0) {
            std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
            std::size_t n = reader_.read(buf.data(), want);
            if (n == 0) invalid("the layer holds " + std::to_string(e.size - left) + " of " + std::to_string(e.size) + " bytes");
            writer_.write(buf.data(), n);
            left -= n;
        }
        std::uint8_t extra;
        if (reader_.read(&extra, 1) != 0) invalid("the layer holds more data than the entry's size");
    }

    LayerReader& reader_;
    TarWriter writer_;
    const LayerEntry* entry_ = nullptr;
    std::string stream_owner_;
    std::vector<std::uint8_t> buffer_;  // one copy buffer for every entry
    std::string rawsd_, rawsd_text_;     // the last valid descriptor and its base64
};

}  // namespace

void export_layer_tar(LayerReader& reader, Sink& out) { Exporter(reader, out).run(); }

}  // namespace winlayer
