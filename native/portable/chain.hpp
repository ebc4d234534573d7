// A layer's parent chain as one read-only lookup: which layer provides a path, with the
// tombstones of nearer layers hiding what is below them. Names compare as NTFS compares
// them (path_rules' ntfs_fold). A parent folder without winlayer.meta (e.g. a base image
// installed by hand) counts as a layer whose files are what its folder holds.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../core/backend.hpp"
#include "metadata.hpp"

namespace winlayer::portable {

// The NTFS comparison key of a layer path.
std::string path_key(const std::string& path);

// Resolves the '/'-separated `rel` under folder `root` component by component, as NTFS
// would (exact spelling first, then a case-insensitive match), without following
// symlinks. Returns the on-disk spelling, or nullopt when absent.
std::optional<std::string> resolve_on_disk(const std::string& root, const std::string& rel);

class ParentChain {
public:
    explicit ParentChain(const LayerChain& parents);

    struct Found {
        std::size_t layer = 0;            // index in the chain, 0 = nearest parent
        const EntryRecord* record = nullptr;  // null: a folder-only layer, or an implicit directory
        std::string disk_path;            // absolute path of the file or folder
        std::string path;                 // layer path as that layer spells it
    };
    // The nearest layer's entry for `path` ("Files/..."), unless a tombstone or a file in a
    // nearer layer hides it. Folders that exist only on disk are found too.
    std::optional<Found> find(const std::string& path) const;
    // Whether a tombstone of chain layer < `below` covers `key` or one of its ancestors.
    bool hidden(const std::string& key, std::size_t below) const;

    std::size_t size() const { return layers_.size(); }
    const std::string& dir(std::size_t i) const { return layers_[i].dir; }
    const LayerMeta& meta(std::size_t i) const { return layers_[i].meta; }
    bool has_meta(std::size_t i) const { return layers_[i].has_meta; }

private:
    struct Layer {
        std::string dir;
        bool has_meta = false;
        LayerMeta meta;
        std::unordered_map<std::string, std::size_t> index;  // key -> entry
        std::unordered_set<std::string> tombstones;           // keys
    };
    std::vector<Layer> layers_;
};

}  // namespace winlayer::portable
