#include "staging_folder.hpp"

#include <windows.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "backup_emulation.hpp"
#include "core/backup_stream.hpp"
#include "core/error.hpp"
#include "core/io.hpp"
#include "core/path_rules.hpp"
#include "portable/metadata.hpp"
#include "portable/store.hpp"
#include "windows/win_util.hpp"

namespace winlayer::emulator {

namespace {

constexpr const char kTombstoneHeader[] = "\xef\xbb\xbfVersion 1.0";

using win::narrow;
using win::widen;

[[noreturn]] void fail(const char* op, const std::wstring& path) { win::throw_last(op, path); }

std::wstring child(const std::wstring& folder, const std::string& rel) {
    std::wstring r = widen(rel);
    std::replace(r.begin(), r.end(), L'/', L'\\');
    return folder + L"\\" + r;
}

struct OwnedHandle {
    HANDLE h = INVALID_HANDLE_VALUE;
    ~OwnedHandle() {
        if (h != INVALID_HANDLE_VALUE) CloseHandle(h);
    }
};

HANDLE open(const std::wstring& path, DWORD access, DWORD disposition) {
    HANDLE h = CreateFileW(path.c_str(), access, FILE_SHARE_READ, nullptr, disposition,
                           FILE_FLAG_BACKUP_SEMANTICS, nullptr);
    if (h == INVALID_HANDLE_VALUE) fail("CreateFileW", path);
    return h;
}

std::string read_all(HANDLE h, const std::wstring& path) {
    std::string out;
    char buf[1 << 16];
    for (;;) {
        DWORD got = 0;
        if (!ReadFile(h, buf, sizeof buf, &got, nullptr)) fail("ReadFile", path);
        if (got == 0) return out;
        out.append(buf, got);
    }
}

void write_all(HANDLE h, const void* data, std::size_t n, const std::wstring& path) {
    auto p = static_cast<const char*>(data);
    while (n) {
        DWORD done = 0;
        if (!WriteFile(h, p, static_cast<DWORD>(std::min<std::size_t>(n, 1u << 30)), &done, nullptr))
            fail("WriteFile", path);
        p += done;
        n -= done;
    }
}

// Everything a backup stream holds, in memory (test data is small).
struct Decoded : BackupStreamHandler {
    std::string sd, reparse_data;
    ExtendedAttributes eas;
    std::vector<std::pair<std::string, std::string>> streams;  // name ("" = main), data

    void security(std::string d) override { sd = std::move(d); }
    void extended_attributes(ExtendedAttributes e) override { eas = std::move(e); }
    void reparse(std::string r) override { reparse_data = std::move(r); }
    void begin_data(const std::string& stream, std::uint64_t) override { streams.push_back({stream, {}}); }
    void data(const std::uint8_t* b, std::size_t n) override {
        streams.back().second.append(reinterpret_cast<const char*>(b), n);
    }
};

// A staged `Files\...` item: attributes, times and the decoded stream.
struct Staged {
    std::uint32_t attributes = 0;
    FileTimes times;
    Decoded stream;
};

Staged read_staged(const std::wstring& path, const std::string& label) {
    OwnedHandle f{open(path, GENERIC_READ, OPEN_EXISTING)};
    Staged s;
    s.times = win::get_times(f.h, path);
    std::string bytes = read_all(f.h, path);
    if (bytes.size() < 4) throw Error::invalid_layer("staged file shorter than its attributes", label, 0);
    s.attributes = static_cast<std::uint8_t>(bytes[0]) | (static_cast<std::uint8_t>(bytes[1]) << 8) |
                   (static_cast<std::uint8_t>(bytes[2]) << 16) |
                   (static_cast<std::uint32_t>(static_cast<std::uint8_t>(bytes[3])) << 24);
    BackupStreamDecoder decoder(s.stream, label);
    decoder.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()) + 4, bytes.size() - 4);
    decoder.finish();
    return s;
}

void emit(LayerWriter& writer, LayerEntry& entry, const std::string& data) {
    entry.size = data.size();
    writer.add(entry);
    if (!data.empty()) writer.write(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
}

// One staged item becomes a directory, file or symlink entry plus its alternate streams.
void emit_staged(LayerWriter& writer, const std::string& rel, const Staged& s, bool directory) {
    LayerEntry e;
    e.path = rel;
    e.attributes = s.attributes;
    e.times = s.times;
    e.security_descriptor = s.stream.sd;
    e.extended_attributes = s.stream.eas;
    if (!s.stream.reparse_data.empty()) {
        ReparsePoint rp = decode_reparse_point(s.stream.reparse_data);
        e.type = EntryType::Symlink;
        e.reparse_data = s.stream.reparse_data;
        e.link_target = rp.target;
        e.mount_point = rp.mount_point;
        writer.add(e);
        return;
    }
    if (directory) {
        e.type = EntryType::Directory;
        writer.add(e);
        return;
    }
    e.type = EntryType::File;
    std::string main;
    for (const auto& st : s.stream.streams)
        if (st.first.empty()) main = st.second;
    emit(writer, e, main);
    for (const auto& st : s.stream.streams) {
        if (st.first.empty()) continue;
        LayerEntry ads;
        ads.path = rel + ":" + st.first;
        ads.type = EntryType::AlternateStream;
        emit(writer, ads, st.second);
    }
}

std::vector<std::pair<std::wstring, bool>> list(const std::wstring& dir) {
    std::vector<std::pair<std::wstring, bool>> out;
    WIN32_FIND_DATAW fd;
    HANDLE f = FindFirstFileW((dir + L"\\*").c_str(), &fd);
    if (f == INVALID_HANDLE_VALUE) fail("FindFirstFileW", dir);
    do {
        std::wstring n = fd.cFileName;
        if (n != L"." && n != L"..") out.push_back({n, (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0});
    } while (FindNextFileW(f, &fd));
    FindClose(f);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return narrow(a.first) < narrow(b.first); });
    return out;
}

bool has_suffix(const std::wstring& s, const std::wstring& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void import_tree(const std::wstring& folder, const std::string& rel, LayerWriter& writer) {
    std::wstring dir = child(folder, rel);
    bool hives = rel == "Hives" || rel.rfind("Hives/", 0) == 0;
    for (const auto& [name, is_dir] : list(dir)) {
        if (has_suffix(name, L".$wcidirs$")) continue;
        std::string path = rel + "/" + narrow(name);
        std::wstring full = dir + L"\\" + name;
        if (hives) {  // the hive data itself
            if (is_dir) throw Error::invalid_layer("a folder under Hives", path, -1);
            OwnedHandle f{open(full, GENERIC_READ, OPEN_EXISTING)};
            LayerEntry e;
            e.path = path;
            e.type = EntryType::File;
            e.times = win::get_times(f.h, full, &e.attributes);
            emit(writer, e, read_all(f.h, full));
            continue;
        }
        if (is_dir) {
            Staged s = read_staged(full + L".$wcidirs$", path);
            emit_staged(writer, path, s, true);
            // A directory reparse point is staged empty.
            if (s.stream.reparse_data.empty()) import_tree(folder, path, writer);
        } else {
            emit_staged(writer, path, read_staged(full, path), false);
        }
    }
}

// The top folders carry their metadata in `<name>.$wcidirs$` when the writer staged one.
void import_top(const std::wstring& folder, const std::string& name, LayerWriter& writer) {
    std::wstring dir = child(folder, name);
    if (GetFileAttributesW(dir.c_str()) == INVALID_FILE_ATTRIBUTES) return;
    std::wstring meta = dir + L".$wcidirs$";
    if (GetFileAttributesW(meta.c_str()) != INVALID_FILE_ATTRIBUTES) {
        emit_staged(writer, name, read_staged(meta, name), true);
    } else {
        OwnedHandle f{open(dir, GENERIC_READ, OPEN_EXISTING)};
        LayerEntry e;
        e.path = name;
        e.type = EntryType::Directory;
        e.times = win::get_times(f.h, dir, &e.attributes);
        writer.add(e);
    }
    import_tree(folder, name, writer);
}

std::vector<std::string> read_tombstones(const std::wstring& folder) {
    std::wstring p = folder + L"\\tombstones.txt";
    if (GetFileAttributesW(p.c_str()) == INVALID_FILE_ATTRIBUTES) return {};
    OwnedHandle f{open(p, GENERIC_READ, OPEN_EXISTING)};
    std::string text = read_all(f.h, p);
    std::vector<std::string> out;
    std::size_t pos = 0;
    bool first = true;
    while (pos < text.size()) {
        std::size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(pos, end - pos);
        pos = end + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (first) {
            if (line != kTombstoneHeader) throw Error::invalid_layer("tombstones.txt lacks its header", "tombstones.txt", 0);
            first = false;
            continue;
        }
        if (line.empty()) continue;
        if (line[0] != '\\') throw Error::invalid_layer("tombstone without a leading '\\'", line, -1);
        std::replace(line.begin(), line.end(), '\\', '/');
        out.push_back("Files" + line);
    }
    return out;
}

// Sink for the staged file being written.
class HandleSink : public Sink {
public:
    HandleSink(HANDLE h, std::wstring path) : h_(h), path_(std::move(path)) {}
    void write(const std::uint8_t* data, std::size_t n) override { write_all(h_, data, n, path_); }

private:
    HANDLE h_;
    std::wstring path_;
};

class StringSink : public Sink {
public:
    explicit StringSink(std::string& out) : out_(out) {}
    void write(const std::uint8_t* data, std::size_t n) override { out_.append(reinterpret_cast<const char*>(data), n); }

private:
    std::string& out_;
};

class Exporter {
public:
    Exporter(LayerReader& reader, std::wstring folder) : reader_(reader), folder_(std::move(folder)) {}

    void run() {
        LayerEntry e;
        while (reader_.next(e)) {
            if (e.type == EntryType::AlternateStream) {
                if (!encoder_) throw Error::invalid_layer("alternate stream without its file", e.path, -1);
                encoder_->begin(e);
                pump();
                continue;
            }
            close_current();
            if (e.type == EntryType::Whiteout) {
                std::string t = e.path.substr(std::string("Files").size());
                std::replace(t.begin(), t.end(), '/', '\\');
                tombstones_ += t + "\n";
                continue;
            }
            std::wstring target = child(folder_, e.path);
            bool in_files = e.path.rfind("Files/", 0) == 0;
            if (e.type == EntryType::HardLink) {  // exported as a copy, as HCS does
                std::wstring source = child(folder_, e.link_target);
                if (!CopyFileW(source.c_str(), target.c_str(), TRUE)) fail("CopyFileW", target);
                if (!in_files) {  // the copy of a restored file has its records too
                    OwnedHandle from{open(source, GENERIC_READ, OPEN_EXISTING)}, to{open(target, GENERIC_READ, OPEN_EXISTING)};
                    keep_records(to.h, kept_records(from.h));
                }
                continue;
            }
            bool directory = e.type == EntryType::Directory ||
                             (e.type == EntryType::Symlink && (e.attributes & FILE_ATTRIBUTE_DIRECTORY));
            if (directory) {
                if (!CreateDirectoryW(target.c_str(), nullptr)) fail("CreateDirectoryW", target);
                if (!in_files) {  // times set last: writing its children changes them
                    dir_times_.push_back({target, e.times});
                    continue;
                }
                target += L".$wcidirs$";
            }
            current_ = open(target, GENERIC_READ | GENERIC_WRITE, CREATE_NEW);
            current_path_ = target;
            times_ = e.times;
            if (!in_files) {  // hives and the utility VM: restored with BackupWrite, without security
                restored_.clear();
                sink_ = std::make_unique<StringSink>(restored_);
                restore_ = true;
                e.security_descriptor.clear();
                encoder_ = std::make_unique<BackupStreamEncoder>(*sink_);
                encoder_->begin(e);
                pump();
                continue;
            }
            sink_ = std::make_unique<HandleSink>(current_, target);
            std::uint32_t a = e.attributes;
            std::uint8_t le[4] = {static_cast<std::uint8_t>(a), static_cast<std::uint8_t>(a >> 8),
                                  static_cast<std::uint8_t>(a >> 16), static_cast<std::uint8_t>(a >> 24)};
            sink_->write(le, 4);
            encoder_ = std::make_unique<BackupStreamEncoder>(*sink_);
            encoder_->begin(e);
            pump();
        }
        close_current();
        for (const auto& [dir, t] : dir_times_) {
            OwnedHandle d{open(dir, FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES, OPEN_EXISTING)};
            keep_records(d.h, {});  // a new folder has no records (another's may linger at its identity)
            win::set_basic_info(d.h, t, 0, dir);
        }
        if (!tombstones_.empty()) {
            std::wstring p = folder_ + L"\\tombstones.txt";
            OwnedHandle f{open(p, GENERIC_WRITE, CREATE_NEW)};
            std::string text = std::string(kTombstoneHeader) + "\n" + tombstones_;
            write_all(f.h, text.data(), text.size(), p);
        }
    }

    ~Exporter() {
        if (current_ != INVALID_HANDLE_VALUE) CloseHandle(current_);
    }

private:
    void pump() {
        std::uint8_t buf[1 << 16];
        for (std::size_t n; (n = reader_.read(buf, sizeof buf)) != 0;) encoder_->write(buf, n);
    }

    void close_current() {
        if (current_ == INVALID_HANDLE_VALUE) return;
        if (encoder_) encoder_->finish();
        if (restore_) restore(current_, restored_, false);
        win::set_basic_info(current_, times_, 0, current_path_);
        CloseHandle(current_);
        current_ = INVALID_HANDLE_VALUE;
        encoder_.reset();
        sink_.reset();
        restore_ = false;
    }

    LayerReader& reader_;
    std::wstring folder_;
    HANDLE current_ = INVALID_HANDLE_VALUE;
    std::wstring current_path_;
    FileTimes times_;
    std::unique_ptr<Sink> sink_;
    std::unique_ptr<BackupStreamEncoder> encoder_;
    std::string restored_;  // the stream of a hive or utility VM file, restored at its end
    bool restore_ = false;
    std::string tombstones_;
    std::vector<std::pair<std::wstring, FileTimes>> dir_times_;
};

// A folder written in place with BackupWrite (a base layer, a utility VM): each item's
// data is on disk, its security descriptor, EAs, streams and reparse data in what the
// emulated BackupWrite kept; both come back through the emulated BackupRead.
class WrittenFolder {
public:
    WrittenFolder(const std::wstring& folder, LayerWriter& writer) : folder_(folder), writer_(writer) {}

    void walk(const std::string& rel) {
        std::wstring path = child(folder_, rel);
        DWORD a = GetFileAttributesW(path.c_str());
        if (a == INVALID_FILE_ATTRIBUTES) fail("GetFileAttributesW", path);
        bool directory = (a & FILE_ATTRIBUTE_DIRECTORY) != 0;
        OwnedHandle f{open(path, GENERIC_READ, OPEN_EXISTING)};
        BY_HANDLE_FILE_INFORMATION id{};
        if (!GetFileInformationByHandle(f.h, &id)) fail("GetFileInformationByHandle", path);
        std::string kept = kept_records(f.h);
        if (!kept.empty()) kept_[rel] = kept;
        if (!directory) {  // a second name of a file already given is a hard link to it
            auto key = std::make_pair(id.dwVolumeSerialNumber,
                                      (std::uint64_t(id.nFileIndexHigh) << 32) | id.nFileIndexLow);
            auto [first, fresh] = names_.emplace(key, rel);
            if (!fresh) return writer_.add_link(rel, first->second);
        }
        Staged s;
        s.times = win::get_times(f.h, path, &s.attributes);
        std::string stream = backup_stream(f.h, true);
        BackupStreamDecoder decoder(s.stream, rel);
        decoder.feed(reinterpret_cast<const std::uint8_t*>(stream.data()), stream.size());
        decoder.finish();
        emit_staged(writer_, rel, s, directory);
        if (!directory || !s.stream.reparse_data.empty()) return;
        for (const auto& [name, is_dir] : list(path)) walk(rel + "/" + narrow(name));
    }

    // Gives the layer's new files the records their originals had (the writer copied
    // only the data).
    void keep_on(const std::wstring& layer) const {
        for (const auto& [rel, records] : kept_) {
            std::wstring path = child(layer, rel);
            OwnedHandle f{open(path, GENERIC_READ, OPEN_EXISTING)};
            keep_records(f.h, records);
        }
    }

private:
    std::wstring folder_;
    LayerWriter& writer_;
    std::map<std::string, std::string> kept_;  // path -> kept records
    std::map<std::pair<DWORD, std::uint64_t>, std::string> names_;  // file identity -> first name
};

// Takes the entries of a walk over files already in their place in a layer folder and
// makes the portable backend's records of them; alternate streams go to the layer's
// stream blobs, as the portable writer keeps them.
class RecordCollector : public LayerWriter {
public:
    RecordCollector(std::wstring layer, std::uint32_t next_blob, std::uint32_t next_group)
        : layer_(std::move(layer)), next_blob_(next_blob), next_group_(next_group) {}

    void add(const LayerEntry& entry) override {
        close_blob();
        if (entry.type == EntryType::AlternateStream) {
            std::string file, stream;
            if (!split_stream_path(entry.path, file, stream) || records_.empty() || records_.back().entry.path != file)
                throw Error::invalid_layer("alternate data stream does not follow its file", entry.path, -1);
            portable::StreamRecord s{stream, entry.size, next_blob_++};
            std::wstring dir = child(layer_, portable::kStreamsDirName);
            CreateDirectoryW(dir.c_str(), nullptr);
            std::wstring blob = dir + L"\\" + widen(std::to_string(s.blob));
            blob_ = open(blob, GENERIC_WRITE, CREATE_ALWAYS);
            blob_path_ = blob;
            records_.back().streams.push_back(s);
            return;
        }
        portable::EntryRecord r;
        r.entry = entry;
        records_.push_back(std::move(r));
        index_[entry.path] = records_.size() - 1;
    }

    void write(const std::uint8_t* data, std::size_t n) override {
        if (blob_ != INVALID_HANDLE_VALUE) write_all(blob_, data, n, blob_path_);  // a file's data is on disk already
    }

    void add_link(const std::string& path, const std::string& target) override {
        close_blob();
        portable::EntryRecord& t = records_.at(index_.at(target));
        if (t.group == 0) t.group = next_group_++;
        portable::EntryRecord r = t;
        r.entry.path = path;
        records_.push_back(std::move(r));
        index_[path] = records_.size() - 1;
    }

    void remove(const std::string& path) override { throw Error::invalid_layer("a whiteout in place", path, -1); }
    void commit(const CommitInfo&) override { close_blob(); }
    void abort() noexcept override { close_blob(); }
    ~RecordCollector() override { close_blob(); }

    std::vector<portable::EntryRecord>& records() { return records_; }

private:
    void close_blob() noexcept {
        if (blob_ != INVALID_HANDLE_VALUE) CloseHandle(blob_);
        blob_ = INVALID_HANDLE_VALUE;
    }

    std::wstring layer_;
    std::uint32_t next_blob_, next_group_;
    std::vector<portable::EntryRecord> records_;
    std::map<std::string, std::size_t> index_;
    HANDLE blob_ = INVALID_HANDLE_VALUE;
    std::wstring blob_path_;
};

}  // namespace

void rewrite_boot_files(const std::string& layer) {
    const std::string stamp = "HCS emulator: processed for ";
    std::string line = stamp + portable::base_name(layer) + "\r\n";
    for (const char* name : {"BCD", "BCD.LOG", "BCD.LOG1", "BCD.LOG2"}) {
        std::wstring path = child(win::long_path(layer), std::string("UtilityVM/Files/EFI/Microsoft/Boot/") + name);
        if (GetFileAttributesW(path.c_str()) == INVALID_FILE_ATTRIBUTES) continue;
        std::string bytes;
        {
            OwnedHandle f{open(path, GENERIC_READ, OPEN_EXISTING)};
            bytes = read_all(f.h, path);
        }
        if (bytes.rfind(stamp, 0) == 0) bytes.erase(0, bytes.find("\r\n") + 2);  // processed before
        // In place (TRUNCATE_EXISTING keeps the file): a hard link would carry the change.
        OwnedHandle f{open(path, GENERIC_WRITE, TRUNCATE_EXISTING)};
        std::string out = line + bytes;
        write_all(f.h, out.data(), out.size(), path);
    }
}

void record_utility_vm(const std::string& layer) {
    portable::FileLock lock = portable::lock_store(portable::dir_name(layer));
    portable::LayerMeta meta = portable::read_meta(layer);
    std::string split;
    {
        auto src = portable::open_tar_split(layer);
        std::uint8_t buf[1 << 16];
        for (std::size_t n; (n = src->read(buf, sizeof buf)) != 0;) split.append(reinterpret_cast<char*>(buf), n);
    }
    // What an earlier ProcessUtilityImage recorded is recorded again.
    auto old = std::remove_if(meta.entries.begin(), meta.entries.end(), [](const portable::EntryRecord& r) {
        return r.entry.path == "UtilityVM" || r.entry.path.rfind("UtilityVM/", 0) == 0;
    });
    meta.entries.erase(old, meta.entries.end());
    std::uint32_t blob = 0, group = 0;
    for (const auto& r : meta.entries) {
        group = std::max(group, r.group);
        for (const auto& st : r.streams) blob = std::max(blob, st.blob);
    }
    std::wstring folder = win::long_path(layer);
    RecordCollector collector(folder, blob + 1, group + 1);
    WrittenFolder(folder, collector).walk("UtilityVM");
    collector.commit(CommitInfo{});
    for (auto& r : collector.records()) meta.entries.push_back(std::move(r));
    portable::write_meta(layer, meta, split);
}

void import_folder(const std::wstring& folder, LayerWriter& writer) {
    import_top(folder, "Files", writer);
    import_top(folder, "Hives", writer);
    for (const auto& t : read_tombstones(folder)) writer.remove(t);
    writer.commit(CommitInfo{});
}

void import_written_folder(const std::wstring& written, LayerWriter& writer, const std::wstring& layer) {
    WrittenFolder w(written, writer);
    for (const char* top : {"Files", "Hives"})
        if (GetFileAttributesW(child(written, top).c_str()) != INVALID_FILE_ATTRIBUTES) w.walk(top);
    writer.commit(CommitInfo{});
    w.keep_on(layer);
}

void export_folder(LayerReader& reader, const std::wstring& folder) { Exporter(reader, folder).run(); }

}  // namespace winlayer::emulator
