// The portable backend: HCS's layer API on a plain filesystem. Stateless in memory: all
// state (layers, activation, preparation) is on disk, so several processes share it.
#include <algorithm>
#include <cerrno>

#include "../core/backend.hpp"
#include "../core/error.hpp"
#include "base_images.hpp"
#include "chain.hpp"
#include "layer_reader.hpp"
#include "layer_writer.hpp"
#include "metadata.hpp"
#include "sandbox.hpp"
#include "store.hpp"

namespace winlayer::portable {

namespace {

class PortableBackend : public Backend {
public:
    explicit PortableBackend(std::string base_images) : base_images_(std::move(base_images)) {}

    std::string name() const override { return "portable"; }

    void activate_layer(const DriverInfo& info, const std::string& id) override {
        LayerRef ref = existing(info, id);
        write_file_atomic(join(ref.dir, kActiveFile), "");
    }

    void deactivate_layer(const DriverInfo& info, const std::string& id) override {
        LayerRef ref = existing(info, id);
        remove_tree(join(ref.dir, kActiveFile));  // Win32-safe (long, non-ASCII paths)
    }

    void create_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id) override {
        LayerRef ref = fresh(info, id);
        if (!parent_id.empty()) existing(info, parent_id);
        LayerMeta meta;
        Staging staging(ref);
        staging.tree().make_dir("Files");
        staging.tree().make_dir("Hives");
        write_meta(staging.path(), meta, "");
        staging.publish(&never_replace);
    }

    void create_sandbox_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id,
                              const LayerChain& parents) override {
        create_sandbox(info, id, parent_id, parents, false);
    }

    void create_view_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id,
                           const LayerChain& parents) override {
        create_sandbox(info, id, parent_id, parents, true);
    }

    void create_sandbox(const DriverInfo& info, const std::string& id, const std::string& parent_id,
                        const LayerChain& parents, bool read_only) {
        LayerRef ref = fresh(info, id);
        // HCS callers pass the parent's id or its folder (the seed passes parents[0]).
        if (!parent_id.empty() && !is_absolute(parent_id)) existing(info, parent_id);
        ParentChain check(parents);  // every parent must exist and be readable
        LayerMeta meta;
        meta.kind = LayerKind::Sandbox;
        meta.parents = parents;
        meta.size_limit = kDefaultSandboxSize;
        Staging staging(ref);
        write_meta(staging.path(), meta, "");
        if (read_only) write_file_atomic(join(staging.path(), kReadOnlyViewFile), "");
        staging.publish(&never_replace);
    }

    void expand_sandbox_size(const DriverInfo& info, const std::string& id, std::uint64_t size) override {
        LayerRef ref = existing(info, id);
        FileLock lock = lock_store(ref.home);
        LayerMeta meta = read_meta(ref.dir);
        if (meta.kind != LayerKind::Sandbox)
            throw Error(ErrorKind::InvalidArgument, "only a sandbox layer has a size").with_path(ref.id);
        // The limit is what the last call set: the driver passes the user's chosen size.
        if (size == 0) throw Error(ErrorKind::InvalidArgument, "sandbox size must be positive").with_path(ref.id);
        meta.size_limit = size;
        write_meta(ref.dir, meta, "");
    }

    void destroy_layer(const DriverInfo& info, const std::string& id) override {
        LayerRef ref = existing(info, id);
        std::string doomed = join(ref.home, ".removing-" + ref.id + "-" + random_token());
        {
            FileLock lock = lock_store(ref.home);
            if (stat_path(join(ref.dir, kPreparedFile)).kind != NodeKind::Missing || view_mounted(ref))
                throw Error(ErrorKind::LayerInUse, "layer is prepared; unprepare it first").with_path(ref.id);
            rename_noreplace(ref.dir, doomed);
        }
        remove_tree(doomed);
    }

    bool layer_exists(const DriverInfo& info, const std::string& id) override {
        return folder_exists(resolve_layer(info, id).dir);
    }

    std::string get_layer_mount_path(const DriverInfo& info, const std::string& id) override {
        LayerRef ref = existing(info, id);
        auto prepared = read_prepared(ref.dir);
        if (prepared && prepared->mode != "folder") return join(ref.dir, kViewDir);
        return ref.dir;
    }

    void prepare_layer(const DriverInfo& info, const std::string& id, const LayerChain& parents) override {
        LayerRef ref = existing(info, id);
        LayerMeta meta = read_meta_head(ref.dir);
        PreparedState state{"folder", parents};
        if (meta.kind == LayerKind::Sandbox) {
            prepare_sandbox(ref, parents);
            state.mode = "view";
        }
        write_prepared(ref.dir, state);
    }

    void unprepare_layer(const DriverInfo& info, const std::string& id) override {
        LayerRef ref = existing(info, id);
        // No early return when the prepared file is missing: a process killed inside
        // prepare_layer may have mounted the view before it wrote that file.
        if (read_meta_head(ref.dir).kind == LayerKind::Sandbox) unprepare_sandbox(ref);
        remove_tree(join(ref.dir, kPreparedFile));
    }

    std::string name_to_guid(const std::string& name) override { return layer_guid(name); }

    std::string get_base_images() override { return list_base_images(base_images_); }

    void process_base_image(const std::string& path) override { check_base_image(path); }

    void process_utility_image(const std::string& path) override { check_utility_image(path); }

    void grant_vm_access(const std::string& vm_id, const std::string& path) override {
        if (vm_id.empty() || vm_id.find_first_of("\t\n") != std::string::npos)
            throw Error(ErrorKind::InvalidArgument, "invalid virtual machine id").with_path(vm_id);
        if (stat_path(path).kind == NodeKind::Missing) throw Error::os(ENOENT, "GrantVmAccess", path);
        // Recorded beside the file: "<vm id>\t<file name>" per line, each grant once.
        std::string record = join(dir_name(path), kVmAccessFile);
        std::string line = vm_id + "\t" + base_name(path) + "\n";
        std::string text = read_file_if_exists(record).value_or("");
        if (("\n" + text).find("\n" + line) != std::string::npos) return;
        write_file_atomic(record, text + line);
    }

    bool publishes_layer_files() const override { return true; }

    std::unique_ptr<LayerWriter> import_writer(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents) override {
        LayerRef ref = resolve_layer(info, id);
        make_dirs(ref.home);
        sweep_store(ref.home);
        if (folder_exists(ref.dir) && !is_empty_created_layer(ref.dir))
            throw Error(ErrorKind::LayerExists, "layer already exists").with_path(ref.id);
        return make_layer_writer(ref, parents);
    }

    std::unique_ptr<LayerReader> export_reader(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents) override {
        LayerRef ref = existing(info, id);
        if (read_meta_head(ref.dir).kind == LayerKind::Sandbox) return sandbox_diff_reader(ref, parents);
        return make_layer_reader(ref.dir);
    }

    RecordOpener tar_split(const DriverInfo& info, const std::string& id) override {
        LayerRef ref = existing(info, id);
        if (!read_meta_head(ref.dir).imported)
            throw Error(ErrorKind::InvalidArgument,
                        "layer was not imported, so there is no original tar to give back; export it canonically")
                .with_path(ref.id);
        return [dir = ref.dir] { return open_tar_split(dir); };
    }

    std::unique_ptr<PayloadStore> payloads(const DriverInfo& info, const std::string& id,
                                           const LayerChain& parents) override {
        (void)parents;
        return make_payload_store(existing(info, id).dir);
    }

    std::vector<std::string> sweep(const DriverInfo& info) override {
        if (info.home.empty()) return {};
        return sweep_store(info.home);
    }

private:
    static bool never_replace(const std::string&) { return false; }

    static LayerRef existing(const DriverInfo& info, const std::string& id) {
        LayerRef ref = resolve_layer(info, id);
        require_layer(ref);
        return ref;
    }

    // A layer about to be created: the home exists, leftovers are swept, the id is free.
    static LayerRef fresh(const DriverInfo& info, const std::string& id) {
        LayerRef ref = resolve_layer(info, id);
        make_dirs(ref.home);
        sweep_store(ref.home);
        if (folder_exists(ref.dir)) throw Error(ErrorKind::LayerExists, "layer already exists").with_path(ref.id);
        return ref;
    }

    std::string base_images_;
};

}  // namespace

}  // namespace winlayer::portable

namespace winlayer {

std::unique_ptr<Backend> make_portable_backend(std::string base_images) {
    return std::make_unique<portable::PortableBackend>(std::move(base_images));
}

}  // namespace winlayer
