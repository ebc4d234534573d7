#include "store.hpp"

#include <cstring>

#include "../core/error.hpp"
#include "metadata.hpp"

namespace winlayer::portable {

namespace {

constexpr const char* kStoreLock = ".winlayer-store.lock";
constexpr const char* kStagingPrefix = ".staging-";
constexpr const char* kRemovingPrefix = ".removing-";
constexpr const char* kReplacingPrefix = ".replacing-";

bool starts_with(const std::string& s, const char* prefix) {
    return s.compare(0, std::strlen(prefix), prefix) == 0;
}

bool ends_with(const std::string& s, const char* suffix) {
    std::size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Lock files left behind are harmless (the next sweep takes them): errors are ignored.
// Through the platform layer: std::remove misses long and non-ASCII paths on Win32.
void remove_lock_file(const std::string& path) noexcept {
    try {
        remove_tree(path);
    } catch (...) {
    }
}

// "<prefix><id>-<16 hex>" -> id
std::string id_of(const std::string& name, const char* prefix) {
    std::size_t start = std::strlen(prefix);
    if (name.size() < start + 17) return {};
    return name.substr(start, name.size() - start - 17);
}

void check_id(const std::string& id) {
    bool bad = id.empty() || id == "." || id == ".." || id[0] == '.' || id.size() > 255;
    for (char c : id)
        if (c == '/' || c == '\\' || c == '\0' || c == ':') bad = true;
    if (bad) throw Error(ErrorKind::InvalidArgument, "invalid layer id").with_path(id);
}

}  // namespace

bool is_backend_file(const std::string& name) {
    static const char* const mine[] = {"Files", "Hives", "UtilityVM", kMetaFileName,
                                       kStreamsDirName, kActiveFile, kPreparedFile, kViewDir,
                                       kUpperDir, kWorkDir, kShimDir};
    for (const char* m : mine)
        if (name == m) return true;
    return false;
}

LayerRef resolve_layer(const DriverInfo& info, const std::string& id) {
    LayerRef ref;
    if (info.home.empty() && is_absolute(id)) {
        ref.home = dir_name(id);
        ref.id = base_name(id);
    } else {
        if (info.home.empty())
            throw Error(ErrorKind::InvalidArgument, "driver home is empty and the layer id is not a path")
                .with_path(id);
        ref.home = info.home;
        ref.id = id;
    }
    check_id(ref.id);
    ref.dir = join(ref.home, ref.id);
    return ref;
}

bool folder_exists(const std::string& dir) { return stat_path(dir).kind == NodeKind::Directory; }

void require_layer(const LayerRef& ref) {
    if (!folder_exists(ref.dir))
        throw Error(ErrorKind::LayerNotFound, "layer not found").with_path(ref.id);
}

std::optional<PreparedState> read_prepared(const std::string& layer_dir) {
    std::string path = join(layer_dir, kPreparedFile);
    auto text = read_file_if_exists(path);
    if (!text) return std::nullopt;
    PreparedState s;
    std::size_t pos = 0;
    bool first = true;
    while (pos < text->size()) {
        std::size_t nl = text->find('\n', pos);
        if (nl == std::string::npos)
            throw Error(ErrorKind::StoreCorrupt, "truncated prepared-state file").with_path(path);
        std::string line = text->substr(pos, nl - pos);
        pos = nl + 1;
        if (first) {
            if (line != "mode folder" && line != "mode view")
                throw Error(ErrorKind::StoreCorrupt, "unknown prepared-state format").with_path(path);
            s.mode = line.substr(5);
            first = false;
        } else {
            s.parents.push_back(line);
        }
    }
    if (first) throw Error(ErrorKind::StoreCorrupt, "empty prepared-state file").with_path(path);
    return s;
}

void write_prepared(const std::string& layer_dir, const PreparedState& state) {
    std::string text = "mode " + state.mode + "\n";
    for (const auto& p : state.parents) {
        if (p.find('\n') != std::string::npos)
            throw Error(ErrorKind::InvalidArgument, "parent path holds a newline").with_path(p);
        text += p + "\n";
    }
    write_file_atomic(join(layer_dir, kPreparedFile), text);
}

FileLock lock_store(const std::string& home) { return FileLock::acquire(join(home, kStoreLock)); }

std::vector<std::string> sweep_store(const std::string& home) {
    std::vector<std::string> swept;
    if (!folder_exists(home)) return swept;
    FileLock lock = lock_store(home);
    auto entries = list_dir(home);
    for (const auto& e : entries) {
        const std::string path = join(home, e.name);
        if (starts_with(e.name, kStagingPrefix)) {
            if (ends_with(e.name, ".lock")) {
                // A lock file whose staging folder is gone (crash between the two).
                std::string dir = path.substr(0, path.size() - 5);
                if (stat_path(dir).kind != NodeKind::Missing) continue;
                if (auto held = FileLock::try_acquire(path)) remove_lock_file(path);
                continue;
            }
            auto held = FileLock::try_acquire(path + ".lock");
            if (!held) continue;  // an import is running
            remove_tree(path);
            remove_lock_file(path + ".lock");
            swept.push_back(e.name);
        } else if (starts_with(e.name, kRemovingPrefix)) {
            try {
                remove_tree(path);
                swept.push_back(e.name);
            } catch (const Error&) {
                // Another process is removing it too; whoever finishes last wins.
            }
        } else if (starts_with(e.name, kReplacingPrefix)) {
            std::string target = join(home, id_of(e.name, kReplacingPrefix));
            if (stat_path(target).kind == NodeKind::Missing) rename_noreplace(path, target);
            else remove_tree(path);
            swept.push_back(e.name);
        }
    }
    return swept;
}

// ---- Staging --------------------------------------------------------------------------

Staging::Staging(const LayerRef& ref) : ref_(ref) {
    std::string name = std::string(kStagingPrefix) + ref.id + "-" + random_token();
    path_ = join(ref.home, name);
    // Created under the store lock so that a sweep never sees the lock file unlocked.
    FileLock store = lock_store(ref.home);
    lock_.emplace(FileLock::acquire(path_ + ".lock"));
    try {
        make_dir(path_);
        tree_.emplace(path_);
    } catch (...) {
        remove_lock_file(path_ + ".lock");
        throw;
    }
}

Staging::~Staging() { discard(); }

void Staging::discard() noexcept {
    if (done_) return;
    done_ = true;
    tree_.reset();
    try {
        remove_tree(path_);
        remove_lock_file(path_ + ".lock");
    } catch (...) {
        // Left for the next sweep: the lock dies with this object.
    }
    lock_.reset();
}

void copy_foreign_files(const std::string& from, const std::string& to) {
    Tree dst(to);
    std::vector<std::pair<std::string, std::string>> stack;  // (absolute source, relative target)
    for (const auto& e : list_dir(from))  // the new layer's own files win (layer_files)
        if (!is_backend_file(e.name) && dst.stat(e.name).kind == NodeKind::Missing)
            stack.emplace_back(join(from, e.name), e.name);
    while (!stack.empty()) {
        auto [src, rel] = stack.back();
        stack.pop_back();
        NodeKind kind = stat_path(src).kind;
        if (kind == NodeKind::File) {
            dst.copy_in(src, rel);
        } else if (kind == NodeKind::Directory) {
            dst.make_dir(rel);
            for (const auto& e : list_dir(src)) stack.emplace_back(join(src, e.name), rel + "/" + e.name);
        }
    }
}

void Staging::publish(bool (*replaceable)(const std::string& layer_dir)) {
    FileLock store = lock_store(ref_.home);
    NodeKind existing = stat_path(ref_.dir).kind;
    if (existing == NodeKind::Missing) {
        rename_noreplace(path_, ref_.dir);
    } else {
        if (existing != NodeKind::Directory || !replaceable(ref_.dir))
            throw Error(ErrorKind::LayerExists, "layer already exists").with_path(ref_.id);
        // Crash-safe replacement: the old folder is set aside first; a sweep puts it back
        // if the new one never arrived.
        copy_foreign_files(ref_.dir, path_);
        tree_->sync();
        std::string aside = join(ref_.home, std::string(kReplacingPrefix) + ref_.id + "-" + random_token());
        rename_noreplace(ref_.dir, aside);
        try {
            rename_noreplace(path_, ref_.dir);
        } catch (...) {
            rename_noreplace(aside, ref_.dir);
            throw;
        }
        sync_dir(ref_.home);
        remove_tree(aside);
    }
    sync_dir(ref_.home);
    done_ = true;
    tree_.reset();
    remove_lock_file(path_ + ".lock");
    lock_.reset();
}

}  // namespace winlayer::portable
