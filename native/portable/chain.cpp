#include "chain.hpp"

#include "../core/error.hpp"
#include "../core/path_rules.hpp"
#include "platform.hpp"
#include "store.hpp"

namespace winlayer::portable {

std::string path_key(const std::string& path) { return ntfs_fold(path); }

ParentChain::ParentChain(const LayerChain& parents) {
    layers_.resize(parents.size());
    for (std::size_t i = 0; i < parents.size(); ++i) {
        Layer& l = layers_[i];
        l.dir = parents[i];
        if (!folder_exists(l.dir))
            throw Error(ErrorKind::LayerNotFound, "parent layer not found").with_path(l.dir);
        l.has_meta = stat_path(join(l.dir, kMetaFileName)).kind == NodeKind::File;
        if (!l.has_meta) continue;
        l.meta = read_meta(l.dir);
        for (std::size_t k = 0; k < l.meta.entries.size(); ++k)
            l.index.emplace(path_key(l.meta.entries[k].entry.path), k);
        for (const auto& t : l.meta.tombstones) l.tombstones.insert(path_key(t));
    }
}

bool ParentChain::hidden(const std::string& key, std::size_t below) const {
    for (std::size_t j = 0; j < below && j < layers_.size(); ++j) {
        const auto& t = layers_[j].tombstones;
        if (t.empty()) continue;
        for (std::size_t cut = key.find('/'); ; cut = key.find('/', cut + 1)) {
            if (t.count(key.substr(0, cut))) return true;
            if (cut == std::string::npos) break;
        }
    }
    return false;
}

std::optional<std::string> resolve_on_disk(const std::string& root, const std::string& path) {
    // Spelled as on disk all along (the usual case): one look instead of one per folder.
    if (stat_path(join(root, path)).kind != NodeKind::Missing) return path;
    std::string disk;
    std::size_t pos = 0;
    while (pos <= path.size()) {
        std::size_t slash = path.find('/', pos);
        std::string name = path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
        std::string candidate = disk.empty() ? name : disk + "/" + name;
        if (stat_path(join(root, candidate)).kind == NodeKind::Missing) {
            std::string want = path_key(name);
            std::optional<std::string> match;
            for (const auto& e : list_dir(disk.empty() ? root : join(root, disk)))
                if (path_key(e.name) == want) {
                    match = e.name;
                    break;
                }
            if (!match) return std::nullopt;
            candidate = disk.empty() ? *match : disk + "/" + *match;
        }
        disk = candidate;
        if (slash == std::string::npos) break;
        pos = slash + 1;
    }
    return disk;
}

std::optional<ParentChain::Found> ParentChain::find(const std::string& path) const {
    const std::string key = path_key(path);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
        if (hidden(key, i)) return std::nullopt;
        const Layer& l = layers_[i];
        auto it = l.index.find(key);
        if (it != l.index.end()) {
            const EntryRecord& r = l.meta.entries[it->second];
            return Found{i, &r, join(l.dir, r.entry.path), r.entry.path};
        }
        // Folders the layer holds without an entry of their own (implicit parents), or
        // every file of a folder-only layer.
        if (auto disk = resolve_on_disk(l.dir, path)) {
            NodeKind kind = stat_path(join(l.dir, *disk)).kind;
            if (kind == NodeKind::Directory || (!l.has_meta && kind == NodeKind::File))
                return Found{i, nullptr, join(l.dir, *disk), *disk};
        }
    }
    return std::nullopt;
}

}  // namespace winlayer::portable
