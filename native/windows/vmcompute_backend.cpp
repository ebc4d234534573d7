// The hcs backend: the Backend contract on Windows, over vmcompute.dll. The HCS calls
// are hcs_api's; import and export are layer_writer.cpp's and layer_reader.cpp's.
// Stateless apart from what HCS keeps, so one instance serves every thread.
#include <windows.h>

#include "backup_file.hpp"
#include "core/backend.hpp"
#include "core/path_rules.hpp"
#include "hcs_api.hpp"
#include "layer_io.hpp"
#include "privileges.hpp"
#include "staging.hpp"
#include "win_util.hpp"

namespace winlayer {

namespace {

// Stored payloads of an imported layer are its files: `Files\...` as written by
// ImportLayer, and the bcd*.bak copies for the boot files ProcessUtilityImage rewrote.
class LayerFolderPayloads : public PayloadStore {
public:
    explicit LayerFolderPayloads(std::wstring folder) : folder_(std::move(folder)) {}

    std::unique_ptr<Source> open(const std::string& entry_name, std::uint64_t size) override {
        std::string problem;
        std::string file = entry_name, stream;
        if (win::under(entry_name, "Files") || win::under(entry_name, "Hives") || win::under(entry_name, "UtilityVM")) {
            if (split_stream_path(entry_name, file, stream)) problem = stream_name_problem(stream);
            if (problem.empty()) problem = layer_path_problem(file);
        } else {
            problem = "not a layer path";
        }
        if (!problem.empty()) throw Error::invalid_layer(problem, entry_name, -1);
        std::string rel = boot_backup(entry_name);
        std::wstring path = win::join(folder_, rel.empty() ? file : rel);
        if (!stream.empty()) path += L":" + win::widen(stream);
        win::Handle h;
        {
            // The layer's files carry the image's ACLs: read them as a backup would.
            win::ThreadPrivileges privileges(false);
            h = win::open_file(path, GENERIC_READ, OPEN_EXISTING, FILE_SHARE_READ);
        }
        LARGE_INTEGER actual{};
        if (!GetFileSizeEx(h.get(), &actual)) win::throw_last("GetFileSizeEx", path);
        if (static_cast<std::uint64_t>(actual.QuadPart) != size)
            throw Error(ErrorKind::StoreCorrupt, "the stored payload of " + entry_name + " has " +
                                                     std::to_string(actual.QuadPart) + " bytes, the tar had " +
                                                     std::to_string(size))
                .with_path(win::narrow(path));
        return std::make_unique<win::HandleSource>(std::move(h), path);
    }

private:
    static std::string boot_backup(const std::string& entry_name) {
        for (const auto& b : win::kBootFiles)
            if (ntfs_fold(entry_name) == ntfs_fold(b[0])) return b[1];
        return {};
    }

    std::wstring folder_;
};

class VmcomputeBackend : public Backend {
public:
    std::string name() const override { return "hcs"; }

    void activate_layer(const DriverInfo& info, const std::string& id) override { hcs::activate_layer(info, id); }
    void deactivate_layer(const DriverInfo& info, const std::string& id) override {
        hcs::deactivate_layer(info, id);
    }
    void create_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id) override {
        hcs::create_layer(info, id, parent_id);
    }
    void create_sandbox_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id,
                              const LayerChain& parents) override {
        hcs::create_sandbox_layer(info, id, parent_id, parents);
    }
    void expand_sandbox_size(const DriverInfo& info, const std::string& id, std::uint64_t size) override {
        hcs::expand_sandbox_size(info, id, size);
    }
    void destroy_layer(const DriverInfo& info, const std::string& id) override { hcs::destroy_layer(info, id); }
    bool layer_exists(const DriverInfo& info, const std::string& id) override {
        return hcs::layer_exists(info, id);
    }
    // A layer that is not prepared has no volume: it is used at its folder.
    std::string get_layer_mount_path(const DriverInfo& info, const std::string& id) override {
        std::string path = hcs::get_layer_mount_path(info, id);
        return path.empty() ? hcs::layer_folder(info, id) : path;
    }
    void prepare_layer(const DriverInfo& info, const std::string& id, const LayerChain& parents) override {
        hcs::prepare_layer(info, id, parents);
    }
    void unprepare_layer(const DriverInfo& info, const std::string& id) override { hcs::unprepare_layer(info, id); }
    std::string name_to_guid(const std::string& name) override { return hcs::guid_to_string(hcs::name_to_guid(name)); }
    std::string get_base_images() override { return hcs::get_base_images(); }
    void process_base_image(const std::string& path) override { hcs::process_base_image(path); }
    void process_utility_image(const std::string& path) override { hcs::process_utility_image(path); }
    void grant_vm_access(const std::string& vm_id, const std::string& path) override {
        hcs::grant_vm_access(vm_id, path);
    }

    std::unique_ptr<LayerWriter> import_writer(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents) override {
        return win::make_layer_writer(info, id, parents);
    }
    std::unique_ptr<LayerReader> export_reader(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents) override {
        return win::make_layer_reader(info, id, parents);
    }

    RecordOpener tar_split(const DriverInfo& info, const std::string& id) override {
        std::wstring path = win::join(win::long_path(hcs::layer_folder(info, id)), win::kTarSplitFile);
        if (!win::exists(path))
            throw Error(ErrorKind::LayerNotFound, "the layer has no tar-split record (it was not imported by winlayer)")
                .with_path(win::narrow(path));
        return [path]() -> std::unique_ptr<Source> {
            return std::make_unique<win::HandleSource>(win::open_file(path, GENERIC_READ, OPEN_EXISTING), path);
        };
    }

    std::unique_ptr<PayloadStore> payloads(const DriverInfo& info, const std::string& id,
                                           const LayerChain&) override {
        return std::make_unique<LayerFolderPayloads>(win::long_path(hcs::layer_folder(info, id)));
    }

    // Import and export folders whose process died (their lock is gone).
    std::vector<std::string> sweep(const DriverInfo& info) override {
        return info.home.empty() ? std::vector<std::string>() : win::sweep_staging(info.home);
    }
};

}  // namespace

std::unique_ptr<Backend> make_vmcompute_backend() {
    hcs::ensure_available();
    return std::make_unique<VmcomputeBackend>();
}

}  // namespace winlayer
