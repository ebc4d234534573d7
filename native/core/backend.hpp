// The backend contract: HCS's layer API (vmcompute.dll, HCS v1) as a C++ interface.
// The portable backend (native/portable) and the vmcompute backend (native/windows)
// implement it; hcs_bridge binds it once for both.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layer.hpp"

namespace winlayer {

enum class Flavour : int { Diff = 0, Filter = 1 };

struct DriverInfo {
    Flavour flavour = Flavour::Filter;
    std::string home;  // the driver's home folder; layer `id` is a folder name in it
};

// Parent layer folders, nearest parent first, base layer last (as HCS takes them).
using LayerChain = std::vector<std::string>;

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;  // "portable" or "hcs"
    // Whether an import's writer publishes CommitInfo::layer_files with the layer (the
    // portable backend: in its staging folder, before the one sync and the rename). HCS
    // creates the layer folder itself: the caller writes its files after the import.
    virtual bool publishes_layer_files() const { return false; }

    virtual void activate_layer(const DriverInfo& info, const std::string& id) = 0;
    virtual void deactivate_layer(const DriverInfo& info, const std::string& id) = 0;
    virtual void create_layer(const DriverInfo& info, const std::string& id,
                              const std::string& parent_id) = 0;
    virtual void create_sandbox_layer(const DriverInfo& info, const std::string& id,
                                      const std::string& parent_id, const LayerChain& parents) = 0;
    // Beyond HCS's API: a sandbox on `parents` for reading them. Where the backend can, its
    // view refuses writes (the portable backend's overlay view: EROFS); elsewhere (HCS, the
    // portable copy view) it is a sandbox like any other, whose changes the caller discards
    // by destroying it. This default is the plain sandbox.
    virtual void create_view_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id,
                                   const LayerChain& parents) {
        create_sandbox_layer(info, id, parent_id, parents);
    }
    virtual void expand_sandbox_size(const DriverInfo& info, const std::string& id,
                                     std::uint64_t size) = 0;
    virtual void destroy_layer(const DriverInfo& info, const std::string& id) = 0;
    virtual bool layer_exists(const DriverInfo& info, const std::string& id) = 0;
    virtual std::string get_layer_mount_path(const DriverInfo& info, const std::string& id) = 0;
    virtual void prepare_layer(const DriverInfo& info, const std::string& id,
                               const LayerChain& parents) = 0;
    virtual void unprepare_layer(const DriverInfo& info, const std::string& id) = 0;
    virtual std::string name_to_guid(const std::string& name) = 0;
    virtual std::string get_base_images() = 0;  // {"Images":[...]} JSON
    virtual void process_base_image(const std::string& path) = 0;
    virtual void process_utility_image(const std::string& path) = 0;
    virtual void grant_vm_access(const std::string& vm_id, const std::string& path) = 0;

    // Streaming import/export: the core tar codec drives these.
    virtual std::unique_ptr<LayerWriter> import_writer(const DriverInfo& info, const std::string& id,
                                                       const LayerChain& parents) = 0;
    virtual std::unique_ptr<LayerReader> export_reader(const DriverInfo& info, const std::string& id,
                                                       const LayerChain& parents) = 0;
    // The imported tar's tar-split record and payloads, for an original (byte-exact) export.
    // tar_split returns an opener: each call reads the record again from its start (an
    // export reads it twice); a layer without a record fails here, not in the opener.
    using RecordOpener = std::function<std::unique_ptr<Source>()>;
    virtual RecordOpener tar_split(const DriverInfo& info, const std::string& id) = 0;
    virtual std::unique_ptr<PayloadStore> payloads(const DriverInfo& info, const std::string& id,
                                                   const LayerChain& parents) = 0;

    // Removes what crashed operations left in info.home (staging folders, half-removed
    // layers) and returns their names. Beyond HCS's API; a backend that leaves nothing
    // behind keeps this default.
    virtual std::vector<std::string> sweep(const DriverInfo& info) {
        (void)info;
        return {};
    }
};

// The portable backend (native/portable): HCS layer semantics on a plain filesystem.
// `base_images` is the folder get_base_images lists.
std::unique_ptr<Backend> make_portable_backend(std::string base_images);

// The vmcompute backend (native/windows/vmcompute_backend.cpp); defined on Windows only.
std::unique_ptr<Backend> make_vmcompute_backend();

}  // namespace winlayer
