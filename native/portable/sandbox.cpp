#include "sandbox.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "../core/backup_stream.hpp"
#include "../core/error.hpp"
#include "../core/security_descriptor.hpp"
#include "chain.hpp"
#include "layer_reader.hpp"
#include "metadata.hpp"

namespace winlayer::portable {

namespace {

constexpr const char* kEnvMount = "WINLAYER_PORTABLE_MOUNT";

// ---- the merged view of a chain's Files/ folders ---------------------------------------

struct MergedNode {
    std::string rel;   // path under Files/, as the providing layer spells it
    std::string key;   // path_key("Files/" + rel)
    NodeKind kind = NodeKind::Other;
    std::string disk;  // absolute path in the providing layer
    std::size_t layer = 0;
    std::vector<std::pair<std::string, std::size_t>> providers;  // folders merged here
};

// Visits the merged tree (parents before children, names in byte order); `visit`
// returns whether to descend into a folder. Tombstones of nearer layers hide what is
// below them; a nearer file hides a farther folder of the same name.
void walk_merged(const ParentChain& chain, const std::function<bool(const MergedNode&)>& visit) {
    MergedNode root;
    root.key = path_key("Files");
    root.kind = NodeKind::Directory;
    for (std::size_t i = 0; i < chain.size(); ++i) {
        std::string files = join(chain.dir(i), "Files");
        if (!chain.hidden(root.key, i) && stat_path(files).kind == NodeKind::Directory)
            root.providers.emplace_back(files, i);
    }
    std::vector<MergedNode> stack{std::move(root)};
    while (!stack.empty()) {
        MergedNode dir = std::move(stack.back());
        stack.pop_back();
        std::vector<MergedNode> children;
        std::unordered_map<std::string, std::size_t> claimed;
        for (const auto& [pdisk, layer] : dir.providers) {
            for (const auto& e : list_dir(pdisk)) {
                if (e.kind != NodeKind::File && e.kind != NodeKind::Directory) continue;
                std::string key = dir.key + "/" + path_key(e.name);
                if (chain.hidden(key, layer)) continue;
                std::string disk = join(pdisk, e.name);
                auto it = claimed.find(key);
                if (it != claimed.end()) {
                    MergedNode& c = children[it->second];
                    if (c.kind == NodeKind::Directory && e.kind == NodeKind::Directory)
                        c.providers.emplace_back(disk, layer);
                    continue;
                }
                MergedNode c;
                c.rel = dir.rel.empty() ? e.name : dir.rel + "/" + e.name;
                c.key = key;
                c.kind = e.kind;
                c.disk = disk;
                c.layer = layer;
                if (e.kind == NodeKind::Directory) c.providers.emplace_back(disk, layer);
                claimed.emplace(key, children.size());
                children.push_back(std::move(c));
            }
        }
        std::sort(children.begin(), children.end(),
                  [](const MergedNode& a, const MergedNode& b) { return a.rel > b.rel; });
        // Reverse order on the stack gives byte order when popped; visit in that order.
        std::vector<MergedNode> descend;
        for (auto it = children.rbegin(); it != children.rend(); ++it) {
            if (visit(*it) && it->kind == NodeKind::Directory) descend.push_back(std::move(*it));
        }
        for (auto it = descend.rbegin(); it != descend.rend(); ++it) stack.push_back(std::move(*it));
    }
}

// ---- modes ------------------------------------------------------------------------------

std::string requested_mode() {
    const char* env = std::getenv(kEnvMount);
    std::string m = env ? env : "";
    if (m.empty() || m == "auto") return "auto";
    if (m == "copy" || m == "overlay") return m;
    throw Error(ErrorKind::InvalidArgument,
                std::string(kEnvMount) + " must be copy, overlay or auto, not '" + m + "'");
}

// The recorded mode ("copy" / "overlay") of a sandbox's view, or "" before the first prepare.
std::string recorded_mode(const LayerRef& ref) {
    auto text = read_file_if_exists(join(ref.dir, kViewModeFile));
    if (!text) return "";
    if (*text == "copy\n" || *text == "overlay\n") return text->substr(0, text->size() - 1);
    throw Error(ErrorKind::StoreCorrupt, "unknown sandbox view mode").with_path(join(ref.dir, kViewModeFile));
}

// Records the mode; in copy mode, waits until the filesystem clock has moved past the
// record's change time, so that any later write gives a later inode change time.
void record_mode(const LayerRef& ref, const std::string& mode) {
    std::string path = join(ref.dir, kViewModeFile);
    write_file_atomic(path, mode + "\n");
    if (mode != "copy") return;
    const std::int64_t stamp = stat_path(path).ctime_ns;
    std::string probe = path + ".probe";
    for (int i = 0; i < 1000; ++i) {
        write_file_atomic(probe, "");
        std::int64_t t = stat_path(probe).ctime_ns;
        remove_tree(probe);
        if (t > stamp) return;
    }
}

LayerChain chain_of(const LayerRef& ref, const LayerMeta& meta, const LayerChain& parents) {
    (void)ref;
    return parents.empty() ? meta.parents : parents;
}

void materialize(const ParentChain& chain, const std::string& target) {
    make_dir(target);
    Tree view(target);
    std::vector<std::pair<std::string, std::string>> dirs;  // rel, source (times last)
    walk_merged(chain, [&](const MergedNode& n) {
        if (n.kind == NodeKind::Directory) {
            view.make_dir(n.rel);
            dirs.emplace_back(n.rel, n.disk);
        } else {
            view.copy_in(n.disk, n.rel);
        }
        return true;
    });
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
        NodeStat st = stat_path(it->second);
        view.set_times(it->first, st.atime_ns, st.mtime_ns);
    }
    view.sync();
}

// Overlay whiteouts for each parent's tombstones, in a folder placed right below that
// parent, spelled as the farther layers spell the deleted names.
std::vector<std::string> overlay_lowers(const LayerRef& ref, const ParentChain& chain) {
    std::string shims = join(ref.dir, kShimDir);
    remove_tree(shims);
    std::vector<std::string> lowers;
    for (std::size_t i = 0; i < chain.size(); ++i) {
        lowers.push_back(join(chain.dir(i), "Files"));
        if (!chain.has_meta(i) || chain.meta(i).tombstones.empty()) continue;
        std::string shim = join(shims, std::to_string(i));
        make_dirs(shim);
        for (const auto& t : chain.meta(i).tombstones) {
            if (path_key(t).compare(0, 6, "FILES/") != 0) continue;
            std::string rel = t.substr(6);
            for (std::size_t j = i + 1; j < chain.size(); ++j) {
                auto disk = resolve_on_disk(join(chain.dir(j), "Files"), rel);
                if (!disk) continue;
                std::string at = join(shim, *disk);
                if (stat_path(at).kind != NodeKind::Missing) continue;
                make_dirs(dir_name(at));
                make_whiteout(at);
            }
        }
        lowers.push_back(shim);
    }
    return lowers;
}

void mount_view(const LayerRef& ref, const ParentChain& chain) {
    std::vector<std::string> lowers = overlay_lowers(ref, chain);
    if (stat_path(join(ref.dir, kReadOnlyViewFile)).kind == NodeKind::File) {
        // Lower folders only: a read-only overlay (older kernels want two of them).
        std::string empty = join(join(ref.dir, kShimDir), "empty");
        make_dirs(empty);
        lowers.push_back(empty);
        make_dir(join(ref.dir, kViewDir));
        mount_overlay(lowers, "", "", join(ref.dir, kViewDir));
        return;
    }
    for (const char* d : {kUpperDir, kWorkDir, kViewDir}) make_dir(join(ref.dir, d));
    if (lowers.empty()) {
        // overlayfs needs a lower folder: an empty one stands for an empty chain.
        std::string empty = join(join(ref.dir, kShimDir), "empty");
        make_dirs(empty);
        lowers.push_back(empty);
    }
    mount_overlay(lowers, join(ref.dir, kUpperDir), join(ref.dir, kWorkDir), join(ref.dir, kViewDir));
}

// ---- the diff ---------------------------------------------------------------------------

std::string default_sd() {
    static const std::string sd = sddl_to_security_descriptor("O:BAG:BA");
    return sd;
}

LayerEntry default_entry(const std::string& path, bool dir, const NodeStat& st) {
    LayerEntry e;
    e.path = path;
    e.type = dir ? EntryType::Directory : EntryType::File;
    e.attributes = dir ? 0x10 : 0x20;
    e.security_descriptor = default_sd();
    std::int64_t t = unix_ns_to_filetime(st.mtime_ns);
    e.times = FileTimes{t, t, t, t};
    e.size = dir ? 0 : st.size;
    return e;
}

class DiffBuilder {
public:
    // `tree`: the sandbox's own folder that `changed` is given paths in (the copy, or the
    // overlay's upper folder).
    DiffBuilder(const ParentChain& chain, std::string layer_id, std::string tree)
        : chain_(chain), id_(std::move(layer_id)), tree_(std::move(tree)) {
        walk_merged(chain_, [&](const MergedNode& n) {
            merged_.emplace(n.key, MergedNode{n.rel, n.key, n.kind, n.disk, n.layer, {}});
            order_.push_back(n.key);
            return true;
        });
    }

    bool in_chain(const std::string& key) const { return merged_.count(key) != 0; }
    const MergedNode* merged(const std::string& key) const {
        auto it = merged_.find(key);
        return it == merged_.end() ? nullptr : &it->second;
    }
    const std::vector<std::string>& merged_order() const { return order_; }

    // An added or modified file, folder or symlink; `disk` holds its data.
    void changed(const std::string& rel, NodeKind kind, const std::string& disk) {
        if (kind != NodeKind::File && kind != NodeKind::Directory && kind != NodeKind::Symlink)
            throw Error::invalid_layer("only files, folders and symbolic links of a sandbox can be exported",
                                       "Files/" + rel, -1);
        const std::string path = "Files/" + rel;
        const std::string key = path_key(path);
        NodeStat st = stat_path(disk);
        const MergedNode* m = merged(key);
        ExportItem item;
        if (m && (m->kind == NodeKind::Directory) != (kind == NodeKind::Directory)) {
            deleted(rel);  // a file replaced by a folder or the other way round
            m = nullptr;
        }
        if (kind == NodeKind::Symlink) {
            item.entry = symlink_entry(path, rel, disk);
            return add(key, std::move(item));
        }
        auto found = m ? chain_.find(path) : std::nullopt;
        if (found && found->record) {
            item.entry = found->record->entry;
            item.entry.path = path;
            item.entry.type = kind == NodeKind::Directory ? EntryType::Directory : EntryType::File;
            if (kind == NodeKind::File) {
                item.entry.size = st.size;
                item.entry.times.last_write = item.entry.times.change = unix_ns_to_filetime(st.mtime_ns);
                add_streams(path, *found);
            }
        } else {
            item.entry = default_entry(path, kind == NodeKind::Directory, st);
        }
        if (kind == NodeKind::File) {
            item.data = disk;
            bytes_ += st.size;
        }
        add(key, std::move(item));
    }

    void deleted(const std::string& rel) {
        ExportItem item;
        item.entry.path = "Files/" + rel;
        item.entry.type = EntryType::Whiteout;
        items_.push_back(std::move(item));
        parent_of("Files/" + rel);
    }

    std::vector<ExportItem> finish(std::uint64_t limit) {
        if (bytes_ > limit)
            throw Error::os(ENOSPC, "export sandbox: changes of " + std::to_string(bytes_) +
                                        " bytes exceed its size limit of " + std::to_string(limit) + " bytes",
                            id_);
        folder("Files");
        return std::move(items_);
    }

private:
    // A POSIX symlink made in the view, as the Windows symlink a container would see: '/'
    // becomes a backslash, and an absolute target is on C:, the container's drive (the
    // view's root). A directory symlink (0x410) when the target, resolved lexically in the
    // sandbox, is a folder; a file symlink (0x420) otherwise, as for a dangling link.
    LayerEntry symlink_entry(const std::string& path, const std::string& rel, const std::string& disk) const {
        const std::string target = read_link(disk);
        if (target.empty()) throw Error::invalid_layer("symbolic link with an empty target", path, -1);
        std::vector<std::string> parts;
        bool outside = false;
        auto walk = [&](const std::string& p) {
            for (std::size_t at = 0; at <= p.size();) {
                std::size_t slash = p.find('/', at);
                if (slash == std::string::npos) slash = p.size();
                const std::string part = p.substr(at, slash - at);
                if (part == "..") {
                    if (parts.empty()) outside = true;
                    else parts.pop_back();
                } else if (!part.empty() && part != ".") {
                    parts.push_back(part);
                }
                at = slash + 1;
            }
        };
        if (target[0] != '/' && rel.find('/') != std::string::npos) walk(rel.substr(0, rel.rfind('/')));
        walk(target);
        const bool dir = !outside && is_folder(parts);
        std::string win = target[0] == '/' ? "C:" + target : target;
        std::replace(win.begin(), win.end(), '/', '\\');
        LayerEntry e;
        e.path = path;
        e.type = EntryType::Symlink;
        e.attributes = (dir ? 0x10 : 0x20) | 0x400;
        e.security_descriptor = default_sd();
        const std::int64_t t = unix_ns_to_filetime(stat_path(disk).mtime_ns);
        e.times = FileTimes{t, t, t, t};
        e.link_target = win;
        try {
            e.reparse_data = encode_reparse_point(win, false);
        } catch (const Error& bad_target) {  // e.g. too long for a reparse point
            throw Error::invalid_layer(bad_target.message, path, -1);
        }
        return e;
    }

    // Whether `parts` (below Files/) name a folder of the sandbox: in its own tree, or
    // else in the chain.
    bool is_folder(const std::vector<std::string>& parts) const {
        std::string rel;
        for (const auto& p : parts) rel += (rel.empty() ? "" : "/") + p;
        if (rel.empty()) return true;
        NodeStat st;
        try {
            st = stat_path(join(tree_, rel));
        } catch (const Error&) {  // e.g. a name too long: not a folder here
            return false;
        }
        if (st.kind != NodeKind::Missing) return st.kind == NodeKind::Directory;
        const MergedNode* m = merged(path_key("Files/" + rel));
        return m && m->kind == NodeKind::Directory;
    }

    void add(const std::string& key, ExportItem item) {
        if (!have_.insert(key).second) return;
        std::string path = item.entry.path;
        items_.push_back(std::move(item));
        parent_of(path);
    }

    void parent_of(const std::string& path) {
        std::size_t slash = path.rfind('/');
        if (slash != std::string::npos) folder(path.substr(0, slash));
    }

    // A folder that holds changes: its own metadata from the chain, or defaults.
    void folder(const std::string& path) {
        const std::string key = path_key(path);
        if (have_.count(key)) return;
        auto found = chain_.find(path);
        ExportItem item;
        if (found && found->record && found->record->entry.type == EntryType::Directory) {
            item.entry = found->record->entry;
            item.entry.path = path;
        } else {
            NodeStat st;
            if (found) st = stat_path(found->disk_path);
            item.entry = default_entry(path, true, st);
        }
        add(key, std::move(item));
    }

    void add_streams(const std::string& path, const ParentChain::Found& found) {
        for (const auto& s : found.record->streams) {
            ExportItem st;
            st.entry.path = path + ":" + s.name;
            st.entry.type = EntryType::AlternateStream;
            st.entry.size = s.size;
            st.data = join(join(chain_.dir(found.layer), kStreamsDirName), std::to_string(s.blob));
            items_.push_back(std::move(st));
        }
    }

    const ParentChain& chain_;
    std::string id_;
    std::string tree_;
    std::unordered_map<std::string, MergedNode> merged_;
    std::vector<std::string> order_;
    std::unordered_set<std::string> have_;
    std::vector<ExportItem> items_;
    std::uint64_t bytes_ = 0;
};

// Visits every entry of `root` (parents first): (rel, kind).
void walk_tree(const std::string& root, const std::function<bool(const std::string&, NodeKind)>& visit) {
    std::vector<std::string> stack{""};
    while (!stack.empty()) {
        std::string dir = stack.back();
        stack.pop_back();
        auto entries = list_dir(dir.empty() ? root : join(root, dir));
        std::sort(entries.begin(), entries.end(),
                  [](const DirEntry& a, const DirEntry& b) { return a.name > b.name; });
        for (const auto& e : entries) {
            std::string rel = dir.empty() ? e.name : dir + "/" + e.name;
            if (visit(rel, e.kind) && e.kind == NodeKind::Directory) stack.push_back(rel);
        }
    }
}

void diff_copy(const LayerRef& ref, DiffBuilder& diff) {
    const std::string view = join(ref.dir, kViewDir);
    if (!folder_exists(view)) return;
    const std::int64_t since = stat_path(join(ref.dir, kViewModeFile)).ctime_ns;
    std::unordered_set<std::string> present;
    walk_tree(view, [&](const std::string& rel, NodeKind kind) {
        const std::string key = path_key("Files/" + rel);
        present.insert(key);
        const std::string disk = join(view, rel);
        const MergedNode* m = diff.merged(key);
        // The copy holds the chain's symlinks as placeholders: a live one is the user's.
        if (!m || kind == NodeKind::Symlink || (m->kind == NodeKind::Directory) != (kind == NodeKind::Directory)) {
            diff.changed(rel, kind, disk);
        } else if (kind == NodeKind::File) {
            NodeStat now = stat_path(disk), was = stat_path(m->disk);
            if (now.size != was.size || now.mtime_ns != was.mtime_ns || now.ctime_ns > since)
                diff.changed(rel, kind, disk);
        }
        return true;
    });
    std::unordered_set<std::string> gone;
    for (const auto& key : diff.merged_order()) {
        if (present.count(key)) continue;
        std::string parent = key.substr(0, key.rfind('/'));
        if (gone.count(parent)) {
            gone.insert(key);
            continue;
        }
        gone.insert(key);
        diff.deleted(diff.merged(key)->rel);
    }
}

void diff_overlay(const LayerRef& ref, DiffBuilder& diff) {
    const std::string upper = join(ref.dir, kUpperDir);
    if (!folder_exists(upper)) return;
    walk_tree(upper, [&](const std::string& rel, NodeKind kind) {
        const std::string key = path_key("Files/" + rel);
        const std::string disk = join(upper, rel);
        if (kind == NodeKind::Whiteout) {
            if (diff.in_chain(key)) diff.deleted(rel);
            return false;
        }
        if (kind == NodeKind::Directory) {
            if (is_opaque_dir(disk) && diff.in_chain(key)) diff.deleted(rel);
            if (!diff.in_chain(key) || is_opaque_dir(disk)) diff.changed(rel, kind, disk);
            return true;
        }
        diff.changed(rel, kind, disk);
        return false;
    });
}

}  // namespace

bool view_mounted(const LayerRef& ref) { return is_mount_point(join(ref.dir, kViewDir)); }

void prepare_sandbox(const LayerRef& ref, const LayerChain& parents) {
    LayerMeta meta = read_meta(ref.dir);
    ParentChain chain(chain_of(ref, meta, parents));
    const std::string requested = requested_mode();
    std::string mode = recorded_mode(ref);
    if (!mode.empty() && requested != "auto" && requested != mode)
        throw Error(ErrorKind::InvalidArgument,
                    "the sandbox's view was made in " + mode + " mode and cannot switch to " + requested)
            .with_path(ref.id);
    if (mode == "copy") return;  // the copy lives on between prepares
    if (mode == "overlay") {
        if (!view_mounted(ref)) mount_view(ref, chain);
        return;
    }
    // No recorded mode: a first prepare, or one that crashed before recording. Clear what
    // such a crash may have left before making the view.
    if (view_mounted(ref)) unmount(join(ref.dir, kViewDir));
    for (const char* d : {kUpperDir, kWorkDir, kViewDir, kShimDir}) remove_tree(join(ref.dir, d));
    if (requested != "copy") {
        try {
            mount_view(ref, chain);
            record_mode(ref, "overlay");
            return;
        } catch (const Error& e) {
            if (requested == "overlay" || (e.kind != ErrorKind::Os && e.kind != ErrorKind::BackendUnavailable))
                throw;
            for (const char* d : {kUpperDir, kWorkDir, kViewDir, kShimDir}) remove_tree(join(ref.dir, d));
        }
    }
    const std::string tmp = join(ref.dir, std::string(kViewDir) + ".tmp-" + random_token());
    try {
        materialize(chain, tmp);
        rename_noreplace(tmp, join(ref.dir, kViewDir));
    } catch (...) {
        remove_tree(tmp);
        throw;
    }
    record_mode(ref, "copy");
}

void unprepare_sandbox(const LayerRef& ref) {
    // Whatever mode was recorded: a prepare killed between mounting the view and
    // recording the mode leaves a mounted view and no record.
    if (view_mounted(ref)) unmount(join(ref.dir, kViewDir));
}

std::unique_ptr<LayerReader> sandbox_diff_reader(const LayerRef& ref, const LayerChain& parents) {
    LayerMeta meta = read_meta(ref.dir);
    ParentChain chain(chain_of(ref, meta, parents));
    std::string mode = recorded_mode(ref);
    DiffBuilder diff(chain, ref.id, join(ref.dir, mode == "overlay" ? kUpperDir : kViewDir));
    if (mode == "copy") diff_copy(ref, diff);
    else if (mode == "overlay") diff_overlay(ref, diff);
    return make_item_reader(diff.finish(meta.size_limit));
}

}  // namespace winlayer::portable
