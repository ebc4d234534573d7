#include "staging_folder.hpp"

#include <windows.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/backup_stream.hpp"
#include "core/error.hpp"
#include "core/io.hpp"
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
                if (!CopyFileW(child(folder_, e.link_target).c_str(), target.c_str(), TRUE)) fail("CopyFileW", target);
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
            current_ = open(target, GENERIC_WRITE, CREATE_NEW);
            current_path_ = target;
            times_ = e.times;
            sink_ = std::make_unique<HandleSink>(current_, target);
            if (!in_files) {  // hives and the utility VM: the data itself
                raw_ = true;
                pump();
                continue;
            }
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
            OwnedHandle d{open(dir, FILE_WRITE_ATTRIBUTES, OPEN_EXISTING)};
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
        for (std::size_t n; (n = reader_.read(buf, sizeof buf)) != 0;) {
            if (raw_) {
                sink_->write(buf, n);
            } else {
                encoder_->write(buf, n);
            }
        }
    }

    void close_current() {
        if (current_ == INVALID_HANDLE_VALUE) return;
        if (encoder_) encoder_->finish();
        win::set_basic_info(current_, times_, 0, current_path_);
        CloseHandle(current_);
        current_ = INVALID_HANDLE_VALUE;
        encoder_.reset();
        sink_.reset();
        raw_ = false;
    }

    LayerReader& reader_;
    std::wstring folder_;
    HANDLE current_ = INVALID_HANDLE_VALUE;
    std::wstring current_path_;
    FileTimes times_;
    std::unique_ptr<HandleSink> sink_;
    std::unique_ptr<BackupStreamEncoder> encoder_;
    bool raw_ = false;
    std::string tombstones_;
    std::vector<std::pair<std::wstring, FileTimes>> dir_times_;
};

}  // namespace

void import_folder(const std::wstring& folder, LayerWriter& writer) {
    import_top(folder, "Files", writer);
    import_top(folder, "Hives", writer);
    for (const auto& t : read_tombstones(folder)) writer.remove(t);
    writer.commit(CommitInfo{});
}

void export_folder(LayerReader& reader, const std::wstring& folder) { Exporter(reader, folder).run(); }

}  // namespace winlayer::emulator
