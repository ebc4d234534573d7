// The portable store: where a layer lives under a driver's home, the per-layer state
// files, the store lock, staging folders and the sweep of what crashed operations left.
//
//   <home>/<id>/                      a layer (winlayer.meta + Files/ Hives/ UtilityVM/ ...)
//   <home>/.staging-<id>-<token>/     an import in progress (locked by ...<token>.lock)
//   <home>/.removing-<id>-<token>/    a layer being destroyed
//   <home>/.replacing-<id>-<token>/   an empty layer being replaced by an import's result
//   <home>/.winlayer-store.lock       serializes structural changes (short sections only)
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "../core/backend.hpp"
#include "platform.hpp"

namespace winlayer::portable {

// Names of the layer folder's files that are the backend's own (everything else in a
// layer folder, e.g. the driver's layerchain.json, belongs to the caller).
constexpr const char* kActiveFile = "winlayer.active";
constexpr const char* kPreparedFile = "winlayer.prepared";
constexpr const char* kViewDir = "view";      // sandbox: the merged view (mount point or copy)
constexpr const char* kUpperDir = "upper";    // sandbox, overlay mode: the changes
constexpr const char* kWorkDir = "work";      // sandbox, overlay mode: overlayfs work folder
constexpr const char* kShimDir = "shims";     // sandbox, overlay mode: parents' tombstones
constexpr const char* kVmAccessFile = "winlayer.vmaccess";
bool is_backend_file(const std::string& name);

struct LayerRef {
    std::string home;
    std::string id;
    std::string dir;  // <home>/<id>
};

// Resolves (info, id): `id` is a folder name in info.home, or, with an empty home, the
// full layer path (as newer hcsshim passes it). Throws InvalidArgument for a bad id.
LayerRef resolve_layer(const DriverInfo& info, const std::string& id);

bool folder_exists(const std::string& dir);
// Throws LayerNotFound unless the layer folder exists.
void require_layer(const LayerRef& ref);

// Prepared-state of a layer (the file winlayer.prepared): the mount mode and chain.
struct PreparedState {
    std::string mode;                  // "folder" (read-only layer) or "view" (sandbox)
    std::vector<std::string> parents;  // as passed to prepare_layer
};
std::optional<PreparedState> read_prepared(const std::string& layer_dir);
void write_prepared(const std::string& layer_dir, const PreparedState& state);

FileLock lock_store(const std::string& home);

// Removes what crashed operations left in `home`: unlocked staging folders, removal
// folders, and restores an empty layer whose replacement never completed. Returns the
// names it removed or restored. Takes the store lock.
std::vector<std::string> sweep_store(const std::string& home);

// A staging folder beside the layer it becomes; locked while this object lives, so a
// concurrent sweep leaves it alone; removed on destruction unless published.
class Staging {
public:
    explicit Staging(const LayerRef& ref);
    ~Staging();
    Staging(const Staging&) = delete;
    Staging& operator=(const Staging&) = delete;

    const std::string& path() const { return path_; }
    Tree& tree() { return *tree_; }
    // Moves the staging folder to ref.dir atomically. An existing layer folder is replaced
    // only if `replaceable` says so (an empty layer from create_layer); its caller-owned
    // files are carried over. Otherwise LayerExists.
    void publish(bool (*replaceable)(const std::string& layer_dir));
    void discard() noexcept;

private:
    LayerRef ref_;
    std::string path_;
    std::optional<FileLock> lock_;
    std::optional<Tree> tree_;
    bool done_ = false;
};

// Copies the caller-owned files of `from` (a layer folder) into `to`, recursively; a
// name `to` holds already (the new layer's own layer_files) is kept.
void copy_foreign_files(const std::string& from, const std::string& to);

}  // namespace winlayer::portable
