// The hcs backend's LayerWriter. Two ways in, as Docker's windowsfilter driver (through
// hcsshim) has them:
//   - a non-base layer is staged in the legacy import folder and handed to ImportLayer:
//     `Files\<path>` = 4-byte attributes + backup stream, directories as real folders
//     plus `<dir>.$wcidirs$`, hives through BackupWrite, whiteouts in tombstones.txt;
//     hard links, directory reparse points and directory times need the imported layer
//     and are applied around the ImportLayer call (staging.hpp names the folder); a UtilityVM is cloned from the parent
//     (hard links, BCD files copied) and changed in place, then ProcessUtilityImage.
//   - a base layer is written straight into its folder with BackupWrite, then
//     ProcessBaseImage and ProcessUtilityImage.
// Nothing is left behind on abort: the staging folder, and the layer folder when this
// writer created or imported it (DestroyLayer first).
#include <windows.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_set>
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

const char* const kUtilityVmFiles = "UtilityVM/Files";
const char* const kBaseHives[] = {"DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"};

constexpr DWORD kRestoreAccess = GENERIC_READ | GENERIC_WRITE | WRITE_DAC | WRITE_OWNER | ACCESS_SYSTEM_SECURITY;

bool is_directory(const LayerEntry& e) {
    return e.type == EntryType::Directory || (e.attributes & FILE_ATTRIBUTE_DIRECTORY) != 0;
}

// The attributes a staged or written entry carries: the bits its type implies are set.
std::uint32_t entry_attributes(const LayerEntry& e) {
    std::uint32_t a = e.attributes;
    if (e.type == EntryType::Directory) a |= FILE_ATTRIBUTE_DIRECTORY;
    if (e.type == EntryType::Symlink) a |= FILE_ATTRIBUTE_REPARSE_POINT;
    return a;
}

// The part of the attributes FILE_BASIC_INFO can set; the rest follows from the
// file's kind and streams.
std::uint32_t settable(std::uint32_t attributes) {
    return attributes & ~static_cast<std::uint32_t>(FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT |
                                                    FILE_ATTRIBUTE_SPARSE_FILE | FILE_ATTRIBUTE_COMPRESSED |
                                                    FILE_ATTRIBUTE_ENCRYPTED);
}

void check_path(const std::string& path) {
    std::string problem = layer_path_problem(path);
    if (!problem.empty()) throw Error::invalid_layer(problem, path, -1);
}

bool same_path(const std::string& a, const std::string& b) { return ntfs_fold(a) == ntfs_fold(b); }

void delete_file_if_present(const std::wstring& path) {
    DWORD a = 0;
    if (!exists(path, &a)) return;
    if (a & FILE_ATTRIBUTE_READONLY) SetFileAttributesW(path.c_str(), a & ~FILE_ATTRIBUTE_READONLY);
    if (!DeleteFileW(path.c_str())) throw_last("DeleteFileW", path);
}

// Copies one file or directory with everything BackupRead sees (security included).
FileTimes copy_with_metadata(const std::wstring& src, const std::wstring& dst, bool directory) {
    Handle in = open_file(src, GENERIC_READ | ACCESS_SYSTEM_SECURITY, OPEN_EXISTING);
    std::uint32_t attributes = 0;
    FileTimes times = get_times(in.get(), src, &attributes);
    if (directory) create_directory(dst);
    Handle out = open_file(dst, kRestoreAccess, directory ? OPEN_EXISTING : CREATE_NEW);
    BackupReadSource reader(std::move(in), src, true);
    BackupWriteSink writer(out.get(), dst, true);
    std::vector<std::uint8_t> buf(1 << 16);
    for (std::size_t n; (n = reader.read(buf.data(), buf.size())) != 0;) writer.write(buf.data(), n);
    writer.finish();
    set_basic_info(out.get(), times, attributes, dst);
    return times;
}

struct DirTimes {
    std::string path;
    FileTimes times;
};

// Directory times change whenever a child is added or removed: set them again last.
void reapply_directory_times(const std::wstring& root, const std::vector<DirTimes>& dirs) {
    for (const auto& d : dirs) {
        std::wstring p = join(root, d.path);
        Handle h = open_file(p, FILE_WRITE_ATTRIBUTES, OPEN_EXISTING, FILE_SHARE_READ | FILE_SHARE_WRITE);
        set_basic_info(h.get(), d.times, 0, p);
    }
}

// Hard-links `rel` under src into dst, copying directories, reparse points and the
// files ProcessUtilityImage rewrites (Server 2016 cannot stack utility VMs, so each
// layer holds a whole one).
void clone_tree(const std::wstring& src_root, const std::wstring& dst_root, const std::string& rel,
                std::vector<DirTimes>& dirs) {
    std::wstring src = join(src_root, rel), dst = join(dst_root, rel);
    DWORD a = 0;
    if (!exists(src, &a)) throw_last("GetFileAttributesW", src);
    bool boot_file = std::any_of(std::begin(kBootFiles), std::end(kBootFiles),
                                 [&](const auto& f) { return same_path(rel, f[0]); });
    bool directory = (a & FILE_ATTRIBUTE_DIRECTORY) != 0;
    if (directory || (a & FILE_ATTRIBUTE_REPARSE_POINT) || boot_file) {
        FileTimes t = copy_with_metadata(src, dst, directory);
        if (directory && !(a & FILE_ATTRIBUTE_REPARSE_POINT)) dirs.push_back({rel, t});
    } else if (!CreateHardLinkW(dst.c_str(), src.c_str(), nullptr)) {
        throw_last("CreateHardLinkW", dst);
    }
    if (!directory || (a & FILE_ATTRIBUTE_REPARSE_POINT)) return;
    WIN32_FIND_DATAW fd;
    HANDLE f = FindFirstFileExW((src + L"\\*").c_str(), FindExInfoBasic, &fd, FindExSearchNameMatch, nullptr, 0);
    if (f == INVALID_HANDLE_VALUE) throw_last("FindFirstFileExW", src);
    std::vector<std::string> children;
    do {
        std::wstring n = fd.cFileName;
        if (n != L"." && n != L"..") children.push_back(rel + "/" + narrow(n));
    } while (FindNextFileW(f, &fd));
    FindClose(f);
    for (const auto& c : children) clone_tree(src_root, dst_root, c, dirs);
}

class FolderLayerWriter : public LayerWriter {
public:
    FolderLayerWriter(const DriverInfo& info, const std::string& id, const LayerChain& parents)
        : info_(info), id_(id), parents_(parents), base_(parents.empty()) {
        hcs::ensure_available();
        folder_ = hcs::layer_folder(info, id);
        dest_ = long_path(folder_);
        if (exists(dest_)) throw Error(ErrorKind::LayerExists, "the layer folder already exists").with_path(folder_);
        for (const auto& p : parents_) parent_roots_.push_back(long_path(p));
        if (base_) {
            create_directories(dest_);
            dest_created_ = true;
        } else {
            staging_.emplace(folder_, "import");
        }
    }

    ~FolderLayerWriter() override {
        if (!done_) abort();
    }

    void add(const LayerEntry& entry) override {
        if (entry.type == EntryType::HardLink) return add_link(entry.path, entry.link_target);
        if (entry.type == EntryType::Whiteout) return remove(entry.path);
        usable();
        if (entry.type == EntryType::AlternateStream) return add_stream(entry);
        auto privileges = scoped_privileges();
        close_current();
        check_path(entry.path);
        const std::string& path = entry.path;
        if (!base_ && path == "UtilityVM") {
            // Its times too are set again last (hcsshim leaves them to the clone, so that
            // an export of the layer would show when it was imported).
            init_utility_vm();
            changed_dirs_.push_back({path, entry.times});
            return;
        }
        if (is_directory(entry)) changed_dirs_.push_back({path, entry.times});
        if (base_) {
            write_in_place(entry, false);
        } else if (path == "UtilityVM" || under(path, "UtilityVM")) {
            if (!has_uvm_) throw Error::invalid_layer("UtilityVM entry before the UtilityVM folder", path, -1);
            if (path != kUtilityVmFiles && !under(path, kUtilityVmFiles))
                throw Error::invalid_layer("only UtilityVM/Files may hold files", path, -1);
            write_in_place(entry, true);
        } else {
            stage(entry);
        }
        added_.insert(ntfs_fold(path));
    }

    void write(const std::uint8_t* data, std::size_t n) override {
        usable();
        if (!cur_.encoder) throw Error(ErrorKind::Internal, "LayerWriter::write without a file entry");
        cur_.encoder->write(data, n);
    }

    void add_link(const std::string& path, const std::string& target) override {
        usable();
        auto privileges = scoped_privileges();
        close_current();
        check_path(path);
        check_path(target);
        if (!under(path, "Files") && !under(path, kUtilityVmFiles))
            throw Error::invalid_layer("a hard link must be under Files/ or UtilityVM/Files/", path, -1);
        std::wstring root;
        if (added_.count(ntfs_fold(target))) {
            root = dest_;  // written by this layer; for a staged file, present after ImportLayer
        } else if (!base_ && under(target, "Files")) {
            for (const auto& r : parent_roots_)
                if (exists(join(r, target))) {
                    root = r;
                    break;
                }
        } else if (!base_ && under(target, kUtilityVmFiles) && exists(join(dest_, target))) {
            root = dest_;  // the cloned utility VM
        }
        if (root.empty())
            throw Error::invalid_layer("hard link target '" + target + "' is in neither this layer nor a parent",
                                       path, -1);
        if (base_ || under(path, kUtilityVmFiles)) {
            link(path, root, target);
        } else {
            links_.push_back({path, target, root});  // the file exists only after ImportLayer
        }
        added_.insert(ntfs_fold(path));
    }

    void remove(const std::string& path) override {
        usable();
        auto privileges = scoped_privileges();
        close_current();
        check_path(path);
        if (base_) throw Error::invalid_layer("a base layer cannot delete files (whiteout)", path, -1);
        if (under(path, "Files")) {
            tombstones_.push_back(path);
        } else if (under(path, kUtilityVmFiles)) {
            init_utility_vm();
            std::wstring p = join(dest_, path);
            if (!exists(p)) throw Error::invalid_layer("whiteout of a UtilityVM file the parent lacks", path, -1);
            remove_tree(p);
        } else {
            throw Error::invalid_layer("a whiteout must be under Files/ or UtilityVM/Files/", path, -1);
        }
    }

    // The tar-split record streams into a work folder of its own while the tar is read,
    // so that it is never held whole in memory, and moves into the layer at commit.
    Sink* tar_split_sink() override {
        usable();
        split_dir_.emplace(folder_, "import");
        std::wstring p = join(split_dir_->path(), kTarSplitFile);
        split_file_ = Handle(CreateFileW(p.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, nullptr));
        if (!split_file_) throw_last("CreateFileW", p);
        split_sink_.emplace(split_file_.get(), p);
        return &*split_sink_;
    }

    void commit(const CommitInfo& info) override {
        usable();
        try {
            ThreadPrivileges privileges(true);
            close_current();
            if (base_) {
                commit_base();
            } else {
                commit_staged();
            }
            store_tar_split(info.tar_split);
            done_ = true;
        } catch (...) {
            abort();
            throw;
        }
    }

    void abort() noexcept override {
        if (done_) return;
        done_ = true;
        { Current dead = std::move(cur_); }  // its handle closes last
        split_sink_.reset();
        split_file_.reset();
        split_dir_.reset();
        staging_.reset();
        if (imported_) {
            try {
                hcs::destroy_layer(info_, id_);
            } catch (...) {
                // The folder is removed below; the original error is what matters.
            }
        }
        if (dest_created_ || imported_) remove_tree_noexcept(dest_);
    }

private:
    struct Current {
        Handle handle;
        std::unique_ptr<HandleSink> staged;        // staging file: attributes + stream
        std::unique_ptr<BackupWriteSink> restore;  // BackupWrite target
        std::unique_ptr<BackupStreamEncoder> encoder;
        std::string path;
        std::wstring file;
        FileTimes times;
        std::uint32_t attributes = 0;  // set at close; 0 keeps what the file has
    };

    struct Link {
        std::string path, target;
        std::wstring root;
    };

    void usable() const {
        if (done_) throw Error(ErrorKind::Internal, "LayerWriter used after commit or abort");
    }

    // Only the BackupWrite paths (base layers, the utility VM) and ImportLayer need the
    // backup/restore privileges; staging files are plain files of our own.
    std::unique_ptr<ThreadPrivileges> scoped_privileges() {
        if (!base_ && !has_uvm_) return nullptr;
        return std::make_unique<ThreadPrivileges>(true);
    }

    void add_stream(const LayerEntry& entry) {
        std::string file, stream;
        if (!split_stream_path(entry.path, file, stream) || !cur_.encoder || !same_path(file, cur_.path))
            throw Error::invalid_layer("alternate data stream does not follow its file", entry.path, -1);
        if (!cur_.staged && !cur_.restore) throw Error::invalid_layer("alternate data stream on a hive", entry.path, -1);
        cur_.encoder->finish();
        cur_.encoder->begin(entry);
    }

    // Finishes the current file: completes its stream and sets its times (after the
    // data, so that writing cannot move them).
    void close_current() {
        if (!cur_.handle) return;
        Current c = std::move(cur_);
        cur_ = Current{};
        c.encoder->finish();
        if (c.staged) c.staged->flush();
        if (c.restore) c.restore->finish();
        set_basic_info(c.handle.get(), c.times, c.attributes, c.file);
    }

    void stage(const LayerEntry& entry) {
        const std::string& path = entry.path;
        bool hive = under(path, "Hives");
        if (!(path == "Files" || path == "Hives" || under(path, "Files") || hive))
            throw Error::invalid_layer("not under Files/, Hives/ or UtilityVM/", path, -1);
        std::wstring target = join(staging_->path(), path);
        if (is_directory(entry)) {
            if (hive) return create_directory(target);
            // A directory reparse point is created empty after staging, so that nothing is
            // staged through it; its .$wcidirs$ file carries the reparse data.
            if (entry.type == EntryType::Symlink) {
                pending_dirs_.push_back(target);
            } else {
                create_directory(target);
            }
            target += L".$wcidirs$";
        } else if (hive && entry.type != EntryType::File) {
            throw Error::invalid_layer("a hive must be a regular file", path, -1);
        }
        cur_.handle = Handle(CreateFileW(target.c_str(), GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ, nullptr,
                                         CREATE_NEW, FILE_ATTRIBUTE_NORMAL, nullptr));
        if (!cur_.handle) throw_last("CreateFileW", target);
        cur_.path = path;
        cur_.file = target;
        cur_.times = entry.times;
        if (hive) {
            // Hives are the data itself, restored without their security.
            cur_.restore = std::make_unique<BackupWriteSink>(cur_.handle.get(), target, false);
            cur_.encoder = std::make_unique<BackupStreamEncoder>(*cur_.restore);
        } else {
            cur_.staged = std::make_unique<HandleSink>(cur_.handle.get(), target, buffer_.get(), kStagingBuffer);
            std::uint32_t a = entry_attributes(entry);
            std::uint8_t le[4] = {static_cast<std::uint8_t>(a), static_cast<std::uint8_t>(a >> 8),
                                  static_cast<std::uint8_t>(a >> 16), static_cast<std::uint8_t>(a >> 24)};
            cur_.staged->write(le, sizeof le);
            cur_.encoder = std::make_unique<BackupStreamEncoder>(*cur_.staged);
        }
        cur_.encoder->begin(entry);
    }

    // BackupWrite into the layer folder itself (base layers, the utility VM).
    // `replace`: the entry overrides what the clone put there.
    void write_in_place(const LayerEntry& entry, bool replace) {
        std::wstring target = join(dest_, entry.path);
        DWORD disposition = CREATE_NEW;
        if (is_directory(entry)) {
            DWORD existing = 0;
            if (replace && exists(target, &existing) &&
                ((existing ^ entry_attributes(entry)) & (FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT)))
                remove_tree(target);
            create_directory(target);
            disposition = OPEN_EXISTING;
        } else if (replace) {
            delete_file_if_present(target);  // a hard link into the parent's utility VM
        }
        cur_.handle = open_file(target, kRestoreAccess, disposition);
        cur_.path = entry.path;
        cur_.file = target;
        cur_.times = entry.times;
        cur_.attributes = settable(entry_attributes(entry));
        cur_.restore = std::make_unique<BackupWriteSink>(cur_.handle.get(), target, true);
        cur_.encoder = std::make_unique<BackupStreamEncoder>(*cur_.restore);
        cur_.encoder->begin(entry);
    }

    void init_utility_vm() {
        if (has_uvm_) return;
        // Creating the layer folder now is what hcsshim does too: ImportLayer fills it.
        create_directories(dest_);
        dest_created_ = true;
        create_directory(join(dest_, "UtilityVM"));
        if (!exists(join(parent_roots_.front(), kUtilityVmFiles)))
            throw Error::invalid_layer("the layer has a UtilityVM but its parent has none", "UtilityVM", -1);
        ThreadPrivileges privileges(true);
        clone_tree(parent_roots_.front(), dest_, kUtilityVmFiles, changed_dirs_);
        has_uvm_ = true;
    }

    void link(const std::string& path, const std::wstring& root, const std::string& target) {
        std::wstring p = join(dest_, path), t = join(root, target);
        delete_file_if_present(p);
        if (!CreateHardLinkW(p.c_str(), t.c_str(), nullptr)) throw_last("CreateHardLinkW", p);
    }

    void commit_staged() {
        if (!tombstones_.empty()) {
            std::wstring p = join(staging_->path(), "tombstones.txt");
            Handle h(CreateFileW(p.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, nullptr));
            if (!h) throw_last("CreateFileW", p);
            HandleSink out(h.get(), p);
            std::string text = "\xef\xbb\xbfVersion 1.0\n";
            for (const auto& t : tombstones_) {
                std::string line = t.substr(std::strlen("Files"));  // "\dir\name", relative to Files
                std::replace(line.begin(), line.end(), '/', '\\');
                text += line + "\n";
            }
            out.write(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
            out.flush();
        }
        for (const auto& d : pending_dirs_) create_directory(d);
        hcs::import_layer(info_, id_, narrow(staging_->path()), parents_);
        imported_ = true;
        for (const auto& l : links_) link(l.path, l.root, l.target);
        reapply_directory_times(dest_, changed_dirs_);
        if (has_uvm_) process_utility_vm();
        staging_->remove();
        staging_.reset();
    }

    void commit_base() {
        for (const char* hive : kBaseHives) {
            std::string p = std::string("Files/Windows/System32/config/") + hive;
            if (!exists(join(dest_, p)))
                throw Error::invalid_layer("a base layer needs the registry hive " + p, p, -1);
        }
        reapply_directory_times(dest_, changed_dirs_);
        hcs::process_base_image(folder_);
        if (exists(join(dest_, kUtilityVmFiles))) process_utility_vm();
    }

    void process_utility_vm() {
        for (const auto& f : kBootFiles) {
            std::wstring src = join(dest_, f[0]);
            if (!exists(src)) continue;
            std::wstring bak = join(dest_, f[1]);
            if (!CopyFileW(src.c_str(), bak.c_str(), TRUE)) throw_last("CopyFileW", bak);
        }
        hcs::process_utility_image(narrow(join(dest_, "UtilityVM")));
    }

    // `record`: the tar-split when it did not stream to tar_split_sink().
    void store_tar_split(const std::string& record) {
        std::wstring p = join(dest_, kTarSplitFile);
        if (split_sink_) {
            split_sink_->write(reinterpret_cast<const std::uint8_t*>(record.data()), record.size());
            split_sink_->flush();
            split_sink_.reset();
            split_file_.reset();
            std::wstring from = join(split_dir_->path(), kTarSplitFile);
            if (!MoveFileExW(from.c_str(), p.c_str(), MOVEFILE_REPLACE_EXISTING)) throw_last("MoveFileExW", p);
            split_dir_->remove();
            split_dir_.reset();
            return;
        }
        Handle h(CreateFileW(p.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, nullptr));
        if (!h) throw_last("CreateFileW", p);
        HandleSink out(h.get(), p);
        out.write(reinterpret_cast<const std::uint8_t*>(record.data()), record.size());
        out.flush();
    }

    DriverInfo info_;
    std::string id_;
    LayerChain parents_;
    bool base_;
    std::string folder_;
    std::wstring dest_;
    std::optional<StagingFolder> staging_;
    std::optional<StagingFolder> split_dir_;  // before split_file_: removed after it closes
    Handle split_file_;
    std::optional<HandleSink> split_sink_;
    std::vector<std::wstring> parent_roots_;
    bool dest_created_ = false, imported_ = false, has_uvm_ = false, done_ = false;
    Current cur_;
    static constexpr std::size_t kStagingBuffer = std::size_t(1) << 20;
    std::unique_ptr<std::uint8_t[]> buffer_{new std::uint8_t[kStagingBuffer]};  // shared by staged files
    std::vector<DirTimes> changed_dirs_;
    std::unordered_set<std::string> added_;  // NTFS-folded paths written by this layer
    std::vector<Link> links_;
    std::vector<std::wstring> pending_dirs_;
    std::vector<std::string> tombstones_;
};

}  // namespace

std::unique_ptr<LayerWriter> make_layer_writer(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents) {
    return std::make_unique<FolderLayerWriter>(info, id, parents);
}

}  // namespace winlayer::win
