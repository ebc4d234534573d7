// The hcs backend's LayerReader: ExportLayer writes the layer into a staging folder
// (the format ImportLayer reads, REFERENCE.md section 2) and this reads it back as
// LayerEntry values in canonical order. The layer's activation state is restored right
// after the export, errors included; the folder lives as long as the reader.
#include <windows.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "backup_file.hpp"
#include "core/backup_stream.hpp"
#include "core/path_rules.hpp"
#include "hcs_api.hpp"
#include "layer_io.hpp"
#include "privileges.hpp"
#include "staging.hpp"
#include "win_util.hpp"

namespace winlayer::win {

namespace {

constexpr std::size_t kChunk = 1 << 16;

struct Item {
    std::string path;  // '/'-separated, relative to the export folder
    bool directory = false;
    bool whiteout = false;  // a tombstone whose folder is not part of the export
};

bool ends_with(const std::wstring& s, const wchar_t* suffix) {
    std::size_t n = wcslen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Lists the export folder, skipping what is not layer content (REFERENCE.md section 2).
void scan(const std::wstring& root, const std::string& rel, std::vector<Item>& out) {
    std::wstring dir = rel.empty() ? root : join(root, rel);
    WIN32_FIND_DATAW fd;
    HANDLE f = FindFirstFileExW((dir + L"\\*").c_str(), FindExInfoBasic, &fd, FindExSearchNameMatch, nullptr, 0);
    if (f == INVALID_HANDLE_VALUE) throw_last("FindFirstFileExW", dir);
    std::vector<Item> here;
    do {
        std::wstring n = fd.cFileName;
        if (n == L"." || n == L".." || ends_with(n, L".$wcidirs$")) continue;
        std::string path = rel.empty() ? narrow(n) : rel + "/" + narrow(n);
        // At the top only the layer's folders: tombstones.txt and anything else HCS keeps
        // there are not layer content.
        if (rel.empty() && n != L"Files" && n != L"Hives" && n != L"UtilityVM") continue;
        bool is_dir = (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0;
        if (is_dir && ntfs_fold(path) == ntfs_fold("Files/$Recycle.Bin")) continue;
        here.push_back({path, is_dir && !(fd.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT)});
    } while (FindNextFileW(f, &fd));
    FindClose(f);
    for (auto& item : here) {
        out.push_back(item);
        if (item.directory) scan(root, item.path, out);
    }
}

// tombstones.txt: a BOM + "Version 1.0" line, then one `\path` (relative to Files) a line.
std::vector<std::string> read_tombstones(const std::wstring& root) {
    std::wstring p = join(root, "tombstones.txt");
    if (!exists(p)) return {};
    HandleSource in(open_file(p, GENERIC_READ, OPEN_EXISTING), p);
    std::string text;
    std::uint8_t buf[kChunk];
    for (std::size_t n; (n = in.read(buf, sizeof buf)) != 0;) text.append(reinterpret_cast<char*>(buf), n);
    std::vector<std::string> lines;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(pos, end - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(line);
        pos = end + 1;
    }
    if (lines.empty() || lines[0] != "\xef\xbb\xbfVersion 1.0")
        throw Error(ErrorKind::StoreCorrupt, "ExportLayer wrote a tombstones.txt without its version line")
            .with_path(narrow(p));
    std::vector<std::string> out;
    for (std::size_t i = 1; i < lines.size(); ++i) {
        if (lines[i].empty()) continue;
        std::string t = "Files" + lines[i];
        std::replace(t.begin(), t.end(), '\\', '/');
        std::string problem = layer_path_problem(t);
        if (problem.empty() && under(t, "Files")) {
            out.push_back(t);
        } else {
            throw Error(ErrorKind::StoreCorrupt, "bad tombstone '" + lines[i] + "'").with_path(narrow(p));
        }
    }
    return out;
}

std::string parent_of(const std::string& path) {
    std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

// What the first pass over a backup stream learns: the metadata and the data streams.
struct Metadata : BackupStreamHandler {
    static constexpr std::size_t kNoStream = SIZE_MAX;
    struct Stream {
        std::string name;  // "" for the main data
        std::uint64_t size = 0;
        std::size_t position = kNoStream;  // its number among the data streams
    };
    std::string sd, reparse_data;
    ExtendedAttributes eas;
    std::vector<Stream> streams;

    void security(std::string d) override { sd = std::move(d); }
    void extended_attributes(ExtendedAttributes e) override { eas = std::move(e); }
    void reparse(std::string r) override { reparse_data = std::move(r); }
    void begin_data(const std::string& stream, std::uint64_t) override {
        streams.push_back({stream, 0, streams.size()});
    }
    void end_data(std::uint64_t size) override { streams.back().size = size; }
};

// Second pass: turns the push-style decoder into pull-style reads of one data stream.
// Memory: what one 64 KiB input chunk decodes to.
class DataPump : BackupStreamHandler {
public:
    DataPump(std::unique_ptr<Source> source, const std::string& label)
        : source_(std::move(source)), decoder_(*this, label) {}

    // Whether stream `position` can still be read from the start by this pump.
    bool can_read(std::size_t position) const { return position >= requested_; }

    // Reads from data stream number `position`; 0 at its end.
    std::size_t read(std::size_t position, std::uint8_t* buf, std::size_t n) {
        requested_ = position;
        for (;;) {
            while (!chunks_.empty() && chunks_.front().position < position) chunks_.pop_front();
            if (!chunks_.empty()) {
                Chunk& c = chunks_.front();
                if (c.position > position) return 0;
                std::size_t k = std::min(n, c.bytes.size() - c.pos);
                std::copy_n(c.bytes.data() + c.pos, k, buf);
                c.pos += k;
                if (c.pos == c.bytes.size()) chunks_.pop_front();
                return k;
            }
            if (eof_ || started_ > position + 1) return 0;
            std::size_t got = source_->read(in_, sizeof in_);
            if (got == 0) {
                decoder_.finish();
                eof_ = true;
            } else {
                decoder_.feed(in_, got);
            }
        }
    }

private:
    struct Chunk {
        std::size_t position;
        std::string bytes;
        std::size_t pos = 0;
    };
    void begin_data(const std::string&, std::uint64_t) override { ++started_; }
    void data(const std::uint8_t* bytes, std::size_t n) override {
        chunks_.push_back({started_ - 1, std::string(reinterpret_cast<const char*>(bytes), n)});
    }

    std::unique_ptr<Source> source_;
    BackupStreamDecoder decoder_;
    std::deque<Chunk> chunks_;
    std::size_t started_ = 0;  // data streams begun so far
    std::size_t requested_ = 0;
    bool eof_ = false;
    std::uint8_t in_[kChunk];
};

class ExportedLayerReader : public LayerReader {
public:
    ExportedLayerReader(const DriverInfo& info, const std::string& id, const LayerChain& parents) {
        hcs::ensure_available();
        export_.emplace(hcs::layer_folder(info, id), "export");
        root_ = export_->path();
        export_layer(info, id, parents);
        scan(root_, "", items_);
        place_whiteouts(read_tombstones(root_));
        hive_times_ = join(root_, "Hives/System_Delta");
    }

    bool next(LayerEntry& entry) override {
        entry = LayerEntry{};
        if (stream_ + 1 < meta_.streams.size()) {  // the current file's next alternate stream
            const Metadata::Stream& s = meta_.streams[++stream_];
            entry.path = current_ + ":" + s.name;
            entry.type = EntryType::AlternateStream;
            entry.size = s.size;
            return true;  // the pump goes on with the same file
        }
        pump_.reset();
        meta_ = Metadata{};
        stream_ = 0;
        if (!pending_whiteouts_.empty()) {  // right after their parent directory
            entry.path = pending_whiteouts_.back();
            entry.type = EntryType::Whiteout;
            pending_whiteouts_.pop_back();
            return true;
        }
        if (next_item_ == items_.size()) return false;
        const Item& item = items_[next_item_++];
        entry.path = item.path;
        if (item.whiteout) {
            entry.type = EntryType::Whiteout;
            return true;
        }
        current_ = item.path;
        if (under(item.path, "Files")) {
            read_staged(item, entry);
        } else {
            read_backup(item, entry);
        }
        auto w = whiteouts_.find(item.path);
        if (item.directory && w != whiteouts_.end()) {
            pending_whiteouts_ = std::move(w->second);
            std::sort(pending_whiteouts_.begin(), pending_whiteouts_.end(), std::greater<std::string>());
            whiteouts_.erase(w);
        }
        return true;
    }

    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        if (stream_ >= meta_.streams.size()) return 0;
        std::size_t position = meta_.streams[stream_].position;
        if (position == Metadata::kNoStream) return 0;
        if (!pump_ || !pump_->can_read(position)) pump_ = std::make_unique<DataPump>(open_stream(), current_);
        return pump_->read(position, buf, n);
    }

private:
    // Whiteouts follow their folder when the export holds it; the others take their
    // place in the sorted order.
    void place_whiteouts(std::vector<std::string> tombstones) {
        std::set<std::string> dirs;
        for (const auto& i : items_)
            if (i.directory) dirs.insert(i.path);
        for (auto& t : tombstones) {
            std::string parent = parent_of(t);
            if (dirs.count(parent)) {
                whiteouts_[parent].push_back(std::move(t));
            } else {
                items_.push_back({std::move(t), false, true});
            }
        }
        std::sort(items_.begin(), items_.end(), [](const Item& a, const Item& b) { return a.path < b.path; });
    }

    void export_layer(const DriverInfo& info, const std::string& id, const LayerChain& parents) {
        // ExportLayer needs the layer activated and not prepared; a prepared layer is the
        // one with a mount path.
        bool prepared = false;
        try {
            prepared = !hcs::get_layer_mount_path(info, id).empty();
        } catch (const Error&) {
            prepared = false;  // not activated: then it is not prepared either
        }
        if (prepared) hcs::unprepare_layer(info, id);
        bool activated = false;
        try {
            hcs::activate_layer(info, id);
            activated = true;
            {
                ThreadPrivileges privileges(false);
                hcs::export_layer(info, id, narrow(root_), parents);
            }
            activated = false;
            hcs::deactivate_layer(info, id);
        } catch (...) {
            try {
                if (activated) hcs::deactivate_layer(info, id);
                if (prepared) hcs::prepare_layer(info, id, parents);
            } catch (...) {
                // The export's own error is the one to report.
            }
            throw;
        }
        if (prepared) hcs::prepare_layer(info, id, parents);
    }

    // `Files\...`: 4-byte attributes, then the backup stream (a directory's lives in
    // `<dir>.$wcidirs$`).
    void read_staged(const Item& item, LayerEntry& entry) {
        std::wstring p = join(root_, item.path);
        if (item.directory) {
            std::wstring meta = p + L".$wcidirs$";
            if (!exists(meta)) {  // no metadata staged: the folder's own
                std::uint32_t a = 0;
                Handle h = open_file(p, GENERIC_READ, OPEN_EXISTING);
                entry.times = get_times(h.get(), p, &a);
                entry.attributes = a;
                entry.type = EntryType::Directory;
                return;
            }
            p = meta;
        }
        staged_file_ = p;
        auto src = open_staged(&entry.attributes, &entry.times);
        read_metadata(*src, entry, item.directory);
    }

    std::unique_ptr<Source> open_staged(std::uint32_t* attributes, FileTimes* times) {
        Handle h = open_file(staged_file_, GENERIC_READ, OPEN_EXISTING);
        if (times) *times = get_times(h.get(), staged_file_);
        auto src = std::make_unique<HandleSource>(std::move(h), staged_file_);
        std::uint8_t le[4];
        std::size_t got = 0;
        while (got < 4) {
            std::size_t n = src->read(le + got, 4 - got);
            if (n == 0) throw Error(ErrorKind::StoreCorrupt, "staged file shorter than its attributes").with_path(narrow(staged_file_));
            got += n;
        }
        if (attributes) *attributes = le[0] | (le[1] << 8) | (le[2] << 16) | (std::uint32_t(le[3]) << 24);
        return src;
    }

    // Hives, UtilityVM and the top folders: BackupRead of the exported file (without
    // security); creation and access times are not kept by the export, so they are the
    // last-write time, and the top folders take theirs from Hives\System_Delta.
    void read_backup(const Item& item, LayerEntry& entry) {
        std::wstring p = join(root_, item.path);
        std::uint32_t a = 0;
        Handle h = open_file(p, GENERIC_READ, OPEN_EXISTING);
        entry.times = get_times(h.get(), p, &a);
        entry.attributes = a;
        if ((item.path == "Files" || item.path == "Hives") && exists(hive_times_)) {
            Handle g = open_file(hive_times_, GENERIC_READ, OPEN_EXISTING);
            entry.times = get_times(g.get(), hive_times_);
        }
        entry.times.creation = entry.times.last_access = entry.times.last_write;
        if (item.directory) {
            entry.type = EntryType::Directory;
            return;
        }
        staged_file_.clear();
        backup_file_ = p;
        BackupReadSource src(std::move(h), p, false);
        read_metadata(src, entry, false);
    }

    std::unique_ptr<Source> open_stream() {
        if (!staged_file_.empty()) return open_staged(nullptr, nullptr);
        return std::make_unique<BackupReadSource>(open_file(backup_file_, GENERIC_READ, OPEN_EXISTING), backup_file_, false);
    }

    // First pass: everything but the data, which follows in a second pass (a backup
    // stream may hold the security descriptor or EAs after the data).
    void read_metadata(Source& src, LayerEntry& entry, bool directory) {
        BackupStreamDecoder decoder(meta_, entry.path);
        std::uint8_t buf[kChunk];
        for (std::size_t n; (n = src.read(buf, sizeof buf)) != 0;) decoder.feed(buf, n);
        decoder.finish();
        entry.security_descriptor = meta_.sd;
        entry.extended_attributes = meta_.eas;
        if (!meta_.reparse_data.empty()) {
            ReparsePoint rp = decode_reparse_point(meta_.reparse_data);
            entry.type = EntryType::Symlink;
            entry.reparse_data = meta_.reparse_data;
            entry.link_target = rp.target;
            entry.mount_point = rp.mount_point;
            entry.attributes |= FILE_ATTRIBUTE_REPARSE_POINT;
            meta_.streams.clear();
            return;
        }
        entry.type = directory ? EntryType::Directory : EntryType::File;
        if (directory) {
            meta_.streams.clear();
            return;
        }
        // The main data stream first (a virtual empty one if the stream has none), then
        // the alternate streams in stream order.
        auto main = std::find_if(meta_.streams.begin(), meta_.streams.end(), [](const auto& s) { return s.name.empty(); });
        Metadata::Stream first;
        if (main != meta_.streams.end()) {
            first = *main;
            meta_.streams.erase(main);
        }
        meta_.streams.insert(meta_.streams.begin(), first);
        entry.size = first.size;
    }

    std::optional<StagingFolder> export_;  // first: destroyed after every handle into it
    std::wstring root_, hive_times_, staged_file_, backup_file_;
    std::vector<Item> items_;
    std::size_t next_item_ = 0;
    std::map<std::string, std::vector<std::string>> whiteouts_;  // by parent directory
    std::vector<std::string> pending_whiteouts_;  // sorted descending: the next one is at the back
    std::string current_;
    Metadata meta_;
    std::size_t stream_ = 0;  // index in meta_.streams of the entry being read
    std::unique_ptr<DataPump> pump_;
};

}  // namespace

std::unique_ptr<LayerReader> make_layer_reader(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents) {
    return std::make_unique<ExportedLayerReader>(info, id, parents);
}

}  // namespace winlayer::win
