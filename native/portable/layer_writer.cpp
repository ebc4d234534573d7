#include "layer_writer.hpp"

#include <optional>
#include <unordered_map>

#include "../core/error.hpp"
#include "../core/path_rules.hpp"
#include "chain.hpp"
#include "metadata.hpp"
#include "store.hpp"
#include "write_queue.hpp"

namespace winlayer::portable {

namespace {

constexpr std::uint32_t kNone = 0xffffffffu;
// The writer's entry records beyond the block being filled (EntryTable), removed at commit.
constexpr const char* kRecordsFile = ".records";
constexpr std::uint32_t kAttrDirectory = 0x10;
constexpr std::uint64_t kWritebackBytes = 256 * 1024;

Error bad(const std::string& message) { return Error::invalid_layer(message, "", -1); }

class PortableLayerWriter : public LayerWriter {
public:
    PortableLayerWriter(const LayerRef& ref, const LayerChain& parents)
        : parents_(parents),
          staging_(ref),
          meta_file_(std::in_place, staging_.tree().create(kMetaFileName)),
          records_(staging_.tree().create(kRecordsFile)),
          io_(std::make_unique<WriteQueue>(staging_.tree())) {
        nodes_.emplace(root_, Node{kNone, true, false});
        dirs_.emplace(root_, Folder{root_, ""});
    }
    ~PortableLayerWriter() override { abort(); }

    void add(const LayerEntry& entry) override {
        close_current();
        switch (entry.type) {
        case EntryType::Whiteout: return remove(entry.path);
        case EntryType::HardLink: return add_link(entry.path, entry.link_target);
        case EntryType::AlternateStream: return add_stream(entry);
        default: return add_node(entry);
        }
    }

    void write(const std::uint8_t* data, std::size_t n) override {
        if (!writing_ || n > remaining_)
            throw Error(ErrorKind::Internal, "layer writer got more data than the entry's size");
        remaining_ -= n;
        std::string chunk = io_->buffer(n);
        chunk.assign(reinterpret_cast<const char*>(data), n);
        io_->push(
            [](WriteQueue::Context& c) {
                c.file.write(reinterpret_cast<const std::uint8_t*>(c.data->data()), c.data->size());
            },
            std::move(chunk));
    }

    void add_link(const std::string& path, const std::string& target) override {
        close_current();
        if (name_key(path) == name_key(target)) throw bad("hard link to itself");
        EntryRecord rec;
        const std::string parent = ensure_parent(path).disk;
        drop(path);  // first: `t` must not point into what it removes
        auto t = nodes_.find(name_key(target));
        if (t != nodes_.end()) {
            if (t->second.dir) throw bad("hard link target is not a file: " + target);
            EntryRecord target_rec = records_.get(t->second.record);
            if (target_rec.entry.type != EntryType::File) throw bad("hard link target is not a file: " + target);
            if (target_rec.group == 0) {
                target_rec.group = next_group_++;
                records_.replace(t->second.record, target_rec);
            }
            rec = target_rec;
            rec.entry.path = child_disk(parent, path);
            // A name for the copy of a parent's file is a file of this layer, not a parent link.
            rec.parent_link = false;
            rec.entry.link_target.clear();
            disk([from = target_rec.entry.path, to = rec.entry.path](WriteQueue::Context& c) {
                c.tree.hard_link(from, to);
            });
        } else {
            if (!chain_) chain_.emplace(parents_);
            auto found = chain_->find(target);
            if (!found || stat_path(found->disk_path).kind != NodeKind::File ||
                (found->record && found->record->entry.type != EntryType::File))
                throw bad("hard link target is neither a file of this layer nor of a parent layer: " +
                          target);
            if (found->record) {
                rec = *found->record;
                rec.streams.clear();
                rec.group = 0;
            } else {
                rec.entry.type = EntryType::File;
                rec.entry.attributes = 0x20;
                rec.entry.size = stat_path(found->disk_path).size;
            }
            rec.entry.path = child_disk(parent, path);
            rec.entry.link_target = found->path;
            rec.parent_link = true;
            disk([from = found->disk_path, to = rec.entry.path](WriteQueue::Context& c) {
                c.tree.copy_in(from, to);
            });
        }
        add_record(path, rec, {}, false, false);
    }

    void remove(const std::string& path) override {
        close_current();
        drop(path);
        tombstones_.push_back(path);
    }

    Sink* tar_split_sink() override { return &*meta_file_; }

    void commit(const CommitInfo& info) override {
        close_current();
        for (const char* top : {"Files", "Hives"})
            if (!nodes_.count(name_key(top))) make_dir(top);
        records_.visit([&](const EntryRecord& r) {
            // Folder times last: creating their children changed them.
            if (is_folder(r.entry))
                disk([path = r.entry.path, t = r.entry.times](WriteQueue::Context& c) {
                    c.tree.set_times(path, filetime_to_unix_ns(t.last_access), filetime_to_unix_ns(t.last_write));
                });
        });
        io_->drain();
        io_.reset();
        nodes_.clear();
        dirs_.clear();
        LayerMeta meta;
        meta.imported = true;
        meta.diff_id = info.diff_id;
        meta.size = info.size;
        meta.tombstones = std::move(tombstones_);
        if (!info.tar_split.empty())  // a record that was not streamed to tar_split_sink()
            meta_file_->write(reinterpret_cast<const std::uint8_t*>(info.tar_split.data()), info.tar_split.size());
        meta_file_->finish(meta, records_);
        meta_file_.reset();
        records_.close_spill();
        staging_.tree().remove(kRecordsFile);
        // The caller's files go in before the one sync: the rename publishes them with the
        // layer, and the sync that makes the layer durable makes them durable too.
        for (const auto& [name, data] : info.layer_files) write_layer_file(name, data);
        staging_.tree().sync();
        staging_.publish(&is_empty_created_layer);
        committed_ = true;
    }

    void abort() noexcept override {
        if (committed_) return;
        io_.reset();
        meta_file_.reset();  // closed first: Windows cannot remove a folder with an open file
        records_.close_spill();
        staging_.discard();
    }

private:
    // What the writer knows of a name; a folder's path on disk is in dirs_, a file's in its
    // record (kept small: there is one per entry).
    struct Node {
        std::uint32_t record = kNone;  // kNone: a folder implied by its children
        bool dir = false;
        bool reparse = false;  // a symlink or junction placeholder
    };
    // A folder as its parent and its own name on disk, not its whole path: the folders a
    // deep path implies then cost the length of the path, not its square.
    struct Folder {
        NameKey parent;
        std::string name;
    };
    struct Parent {
        NameKey key;
        std::string disk;
    };

    void write_layer_file(const std::string& name, const std::string& data) {
        if (name.empty() || name == "." || name == ".." || name[0] == '.' || is_backend_file(name) ||
            name.find_first_of("/\\:") != std::string::npos)
            throw Error(ErrorKind::InvalidArgument, "not a name for a caller's file in a layer folder")
                .with_path(name);
        File f = staging_.tree().create(name, /*owner_only=*/true);  // as the driver's own writes
        f.write(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
        f.close();
    }

    static std::string name_of(const std::string& path) {
        std::size_t slash = path.rfind('/');
        return slash == std::string::npos ? path : path.substr(slash + 1);
    }

    static std::string child_disk(const std::string& dir, const std::string& path) {
        return dir.empty() ? name_of(path) : dir + "/" + name_of(path);
    }

    // The path in the staging tree of the node at `key`, as first spelled.
    std::string disk_of(const NameKey& key, const Node& n) const {
        return n.dir ? folder_disk(key) : records_.path(n.record);
    }

    std::string folder_disk(NameKey key) const {
        std::vector<const std::string*> names;
        for (; !(key == root_); key = dirs_.at(key).parent) names.push_back(&dirs_.at(key).name);
        std::string disk;
        for (auto it = names.rbegin(); it != names.rend(); ++it) disk += (disk.empty() ? "" : "/") + **it;
        return disk;
    }

    // Whether the folder `key` is below the folder `ancestor`.
    bool folder_below(NameKey key, const NameKey& ancestor) const {
        while (!(key == root_)) {
            key = dirs_.at(key).parent;
            if (key == ancestor) return true;
        }
        return false;
    }

    // The folder `path` goes into and its staging path. The folders the tar did not list
    // are made (without an entry), with one disk operation for them all.
    Parent ensure_parent(const std::string& path) {
        std::size_t end = path.rfind('/');
        if (end == std::string::npos) return {root_, ""};
        NameKey key = name_key(path.substr(0, end));
        if (!parent_.disk.empty() && parent_.key == key) return parent_;
        // The ends of the missing folders, nearest first, up to the nearest known one.
        std::vector<std::pair<std::size_t, NameKey>> missing;
        auto it = nodes_.find(key);
        while (it == nodes_.end()) {
            missing.emplace_back(end, key);
            const std::size_t up = path.rfind('/', end - 1);
            end = up == std::string::npos ? 0 : up;
            key = name_key(path.substr(0, end));
            it = nodes_.find(key);
        }
        if (!it->second.dir) throw bad("parent is not a folder: " + path.substr(0, end));
        if (it->second.reparse) throw bad("parent is a symbolic link or junction: " + path.substr(0, end));
        std::string staging = folder_disk(key);
        const std::size_t known = staging.size();
        for (auto m = missing.rbegin(); m != missing.rend(); ++m) {
            const std::size_t start = end == 0 ? 0 : end + 1;
            std::string name = path.substr(start, m->first - start);
            staging += (staging.empty() ? "" : "/") + name;
            dirs_.emplace(m->second, Folder{key, std::move(name)});
            nodes_.emplace(m->second, Node{kNone, true, false});
            key = m->second;
            end = m->first;
        }
        if (!missing.empty())
            disk([staging, known](WriteQueue::Context& c) { c.tree.make_dirs(staging, known); });
        parent_ = {key, std::move(staging)};
        return parent_;
    }

    void add_node(const LayerEntry& entry) {
        const NameKey key = name_key(entry.path);
        const bool reparse = entry.type == EntryType::Symlink;
        const bool dir = is_folder(entry);
        const Parent parent = ensure_parent(entry.path);
        auto it = nodes_.find(key);
        if (it != nodes_.end() && it->second.dir && entry.type == EntryType::Directory &&
            !it->second.reparse) {
            // The same folder again (or one implied earlier): new metadata, same contents.
            EntryRecord rec;
            rec.entry = entry;
            rec.entry.path = disk_of(key, it->second);
            if (it->second.record == kNone) {
                it->second.record = static_cast<std::uint32_t>(records_.add(rec));
            } else {
                rec.streams = records_.get(it->second.record).streams;
                records_.replace(it->second.record, rec);
            }
            return;
        }
        drop(entry.path);
        EntryRecord rec;
        rec.entry = entry;
        rec.entry.path = child_disk(parent.disk, entry.path);
        if (dir) make_dir(rec.entry.path);
        else open_file(rec.entry.path, entry.type == EntryType::File ? entry.size : 0, entry.times);
        if (entry.type != EntryType::File) rec.entry.size = 0;
        add_record(entry.path, rec, parent.key, dir, reparse);
    }

    void add_stream(const LayerEntry& entry) {
        std::string file, stream;
        if (!split_stream_path(entry.path, file, stream)) throw bad("not an alternate stream name");
        auto it = nodes_.find(name_key(file));
        if (it == nodes_.end() || it->second.record == kNone)
            throw bad("alternate data stream of a file that this layer does not hold: " + file);
        EntryRecord rec = records_.get(it->second.record);
        if (!streams_dir_) {
            make_dir(kStreamsDirName);
            streams_dir_ = true;
        }
        const std::string skey = path_key(stream);
        for (auto s = rec.streams.begin(); s != rec.streams.end(); ++s)
            if (path_key(s->name) == skey) {
                remove_file(blob_path(s->blob));
                rec.streams.erase(s);
                break;
            }
        StreamRecord s{stream, entry.size, next_blob_++};
        open_file(blob_path(s.blob), entry.size, rec.entry.times);
        rec.streams.push_back(std::move(s));
        records_.replace(it->second.record, rec);
    }

    static std::string blob_path(std::uint32_t blob) {
        return std::string(kStreamsDirName) + "/" + std::to_string(blob);
    }

    void add_record(const std::string& path, const EntryRecord& rec, const NameKey& parent, bool dir,
                    bool reparse) {
        const NameKey key = name_key(path);
        nodes_[key] = Node{static_cast<std::uint32_t>(records_.add(rec)), dir, reparse};
        if (dir) dirs_[key] = Folder{parent, name_of(rec.entry.path)};
    }

    // Removes what this layer holds at `path` (a whole subtree for a folder).
    void drop(const std::string& path) {
        const NameKey key = name_key(path);
        auto it = nodes_.find(key);
        if (it == nodes_.end() || path.empty()) return;
        const Node node = it->second;
        const std::string disk_path = disk_of(key, node);
        if (node.dir) {
            // Names are keyed by digest: the subtree is found by the paths of the records
            // and by the parents of the folders (rare: a folder replaced or deleted again).
            parent_ = {};
            const std::string prefix = path_key(path) + "/";
            std::vector<NameKey> gone;
            for (const auto& [k, folder] : dirs_)
                if (folder_below(k, key)) gone.push_back(k);
            for (std::size_t i = 0; i < records_.size(); ++i) {
                if (records_.removed(i)) continue;
                const std::string p = records_.path(i);
                if (path_key(p).compare(0, prefix.size(), prefix) != 0) continue;
                auto n = nodes_.find(name_key(p));
                if (n != nodes_.end() && n->second.record == i) nodes_.erase(n);
                forget(static_cast<std::uint32_t>(i));
            }
            for (const NameKey& k : gone) {
                nodes_.erase(k);
                dirs_.erase(k);
            }
            disk([disk_path](WriteQueue::Context& c) { c.tree.remove_tree(disk_path); });
            dirs_.erase(key);
        } else {
            remove_file(disk_path);
        }
        forget(node.record);
        nodes_.erase(key);
    }

    void forget(std::uint32_t record) {
        if (record == kNone || records_.removed(record)) return;
        records_.remove(record);
        const EntryRecord rec = records_.get(record);
        if (rec.group != 0) return;  // the streams live on with the other names
        for (const auto& s : rec.streams) remove_file(blob_path(s.blob));
    }

    static bool is_folder(const LayerEntry& e) {
        return e.type == EntryType::Directory ||
               (e.type == EntryType::Symlink && (e.mount_point || (e.attributes & kAttrDirectory)));
    }

    void disk(WriteQueue::Op op) { io_->push(std::move(op)); }

    void make_dir(const std::string& path) {
        disk([path](WriteQueue::Context& c) { c.tree.make_dir(path); });
    }

    void remove_file(const std::string& path) {
        disk([path](WriteQueue::Context& c) { c.tree.remove(path); });
    }

    // Creates `path`; `size` bytes of data follow through write() (none: closed at once).
    void open_file(const std::string& path, std::uint64_t size, const FileTimes& times) {
        disk([path](WriteQueue::Context& c) { c.file = c.tree.create(path); });
        writing_ = true;
        remaining_ = size;
        current_size_ = size;
        current_times_ = times;
        current_path_ = path;
        if (size == 0) close_current();
    }

    void close_current() {
        if (!writing_) return;
        if (remaining_ != 0)
            throw Error(ErrorKind::Internal, "layer writer got less data than the entry's size")
                .with_path(current_path_);
        writing_ = false;
        disk([t = current_times_, large = current_size_ >= kWritebackBytes](WriteQueue::Context& c) {
            c.file.set_times(filetime_to_unix_ns(t.last_access), filetime_to_unix_ns(t.last_write));
            // The commit syncs everything: its wait is shorter if large files are on
            // their way to the disk already.
            if (large) c.file.start_writeback();
            c.file.close();
        });
    }

    LayerChain parents_;
    std::optional<ParentChain> chain_;
    Staging staging_;
    std::optional<MetaFileWriter> meta_file_;  // after staging_: closed before the folder goes
    std::unordered_map<NameKey, Node, NameKeyHash> nodes_;
    const NameKey root_ = name_key("");
    std::unordered_map<NameKey, Folder, NameKeyHash> dirs_;
    Parent parent_;  // the last ensure_parent's answer: entries come folder by folder
    EntryTable records_;  // after staging_: its file is closed before the folder goes
    std::vector<std::string> tombstones_;
    std::unique_ptr<WriteQueue> io_;  // after staging_: stopped before the folder goes
    bool writing_ = false;
    std::uint64_t remaining_ = 0;
    std::uint64_t current_size_ = 0;
    FileTimes current_times_;
    std::string current_path_;
    std::uint32_t next_blob_ = 1;
    std::uint32_t next_group_ = 1;
    bool streams_dir_ = false;
    bool committed_ = false;
};

}  // namespace

std::unique_ptr<LayerWriter> make_layer_writer(const LayerRef& ref, const LayerChain& parents) {
    return std::make_unique<PortableLayerWriter>(ref, parents);
}

bool is_empty_created_layer(const std::string& layer_dir) {
    if (stat_path(join(layer_dir, kMetaFileName)).kind != NodeKind::File) return false;
    if (stat_path(join(layer_dir, kPreparedFile)).kind != NodeKind::Missing) return false;
    LayerMeta m = read_meta(layer_dir);
    return m.kind == LayerKind::ReadOnly && !m.imported && m.entries.empty() && m.tombstones.empty();
}

}  // namespace winlayer::portable
