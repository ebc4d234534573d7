#include "merged_layer.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "error.hpp"
#include "path_rules.hpp"

namespace winlayer {

namespace {

constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();

// One name of the merged view.
struct Node {
    std::uint32_t parent = kNone;  // kNone: a top-level folder (Files, Hives, UtilityVM)
    std::string name;              // the component, as the nearest layer holding it spells it
    EntryType type = EntryType::Directory;
    bool has_entry = false;        // false: a folder no layer lists (implied by its contents)
    std::uint32_t layer = 0;       // where the entry is: layer, position in its reader
    std::uint64_t index = 0;
    std::uint32_t file = kNone;    // File and HardLink: which file (files_) this name is
};

// A file of some layer: the entry that carries its data there.
struct FileSource {
    std::uint32_t layer = 0;
    std::uint64_t index = 0;
    std::uint32_t carrier = kNone;  // the output item that carries its data
};

// One entry of the result, in output order.
struct Item {
    std::string key;  // canonical_order_key of `path`
    std::string path;
    std::uint32_t node = kNone;
    std::uint32_t layer = 0;
    std::uint64_t index = 0;
    std::uint32_t link_to = kNone;  // a hard link to this item's path
};

// A layer's reader, with the position of the entry it returned last.
struct Cursor {
    std::unique_ptr<LayerReader> reader;
    std::int64_t pos = -1;
    bool held = false;  // the entry at `pos` was read ahead and not used yet
    LayerEntry entry;
};

// Splits a folded or spelled path into its components.
std::vector<std::string> components(const std::string& path) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
        std::size_t slash = path.find('/', start);
        parts.push_back(path.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
        if (slash == std::string::npos) return parts;
        start = slash + 1;
    }
}

class MergedReader : public LayerReader {
public:
    MergedReader(std::size_t layers, LayerOpener open)
        : open_(std::move(open)), cursors_(layers), last_use_(layers, 0) {
        for (std::size_t i = 0; i < layers; ++i) index_layer(static_cast<std::uint32_t>(i));
        if (!wants_.empty()) {
            const Want& w = wants_.begin()->second.front();
            throw Error(ErrorKind::InvalidLayer, "hard link '" + w.link + "' names '" + w.target +
                                                     "', which no layer below it holds");
        }
        order();
    }

    bool next(LayerEntry& out) override {
        current_ = nullptr;
        if (streams_of_ != nullptr) {
            Cursor& c = *streams_of_;
            if (!c.held && pull(c)) {
                std::string owner, stream;
                if (c.entry.type == EntryType::AlternateStream && split_stream_path(c.entry.path, owner, stream) &&
                    owner == stream_owner_) {
                    out = c.entry;
                    out.path = stream_target_ + ":" + stream;
                    current_ = c.reader.get();
                    return true;
                }
                c.held = true;
            }
            streams_of_ = nullptr;
        }
        release_unused();
        if (next_item_ == items_.size()) return false;
        const Item& it = items_[next_item_++];
        if (it.link_to != kNone) {
            out = LayerEntry{};
            out.path = it.path;
            out.type = EntryType::HardLink;
            out.link_target = items_[it.link_to].path;
            return true;
        }
        Cursor& c = seek(it.layer, it.index);
        out = c.entry;
        out.path = it.path;
        c.held = false;
        if (out.type == EntryType::File || out.type == EntryType::Directory) {
            streams_of_ = &c;
            stream_owner_ = c.entry.path;
            stream_target_ = it.path;
        }
        current_ = c.reader.get();
        return true;
    }

    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        return current_ != nullptr ? current_->read(buf, n) : 0;
    }

private:
    // A hard link of a nearer layer to a path of the layers below it, not found yet.
    struct Want {
        std::uint32_t from_layer = 0;
        std::string link;    // the link's path, for errors
        std::string target;  // as the link spells it
        std::vector<std::uint32_t> nodes;  // merged names that are this file
    };

    // The first pass over layer `i`: claims the names it provides, records its whiteouts
    // for the layers below and resolves the links of nearer layers that point into it.
    void index_layer(std::uint32_t i) {
        std::unique_ptr<LayerReader> reader = open_(i);
        std::unordered_map<std::string, std::uint64_t> heads;  // this layer's files: key -> index
        std::vector<std::string> whiteouts;
        LayerEntry e;
        for (std::uint64_t pos = 0; reader->next(e); ++pos) {
            if (e.type == EntryType::AlternateStream) continue;  // travels with its file
            const std::string key = ntfs_fold(e.path);
            const std::size_t slash = key.find('/');
            const std::string root = key.substr(0, slash);
            if (root != "FILES") {
                if (e.type == EntryType::Whiteout) continue;  // nothing outside Files/ is deleted
                auto owner = root_owner_.emplace(root, i).first;
                if (owner->second != i) continue;  // taken whole from a nearer layer
            }
            if (e.type == EntryType::File) heads.emplace(key, pos);
            resolve_wants(key, e, i, pos, heads);
            if (e.type == EntryType::Whiteout) {
                whiteouts.push_back(key);
                continue;
            }
            if (hidden(key)) continue;
            std::optional<std::uint32_t> node = claim(key, e, i, pos);
            if (!node) continue;
            if (e.type == EntryType::File) {
                nodes_[*node].file = file_of(i, pos);
            } else if (e.type == EntryType::HardLink) {
                const std::string target = ntfs_fold(e.link_target);
                auto head = heads.find(target);
                if (head != heads.end()) {
                    nodes_[*node].file = file_of(i, head->second);
                } else {
                    add_want(target, Want{i, e.path, e.link_target, {*node}});
                }
            }
        }
        for (auto& w : whiteouts) tombstones_.insert(std::move(w));
    }

    // Links of nearer layers to `key` find their file here.
    void resolve_wants(const std::string& key, const LayerEntry& e, std::uint32_t i, std::uint64_t pos,
                       const std::unordered_map<std::string, std::uint64_t>& heads) {
        auto found = wants_.find(key);
        if (found == wants_.end()) return;
        std::vector<Want> waiting, later;
        for (Want& w : found->second) (w.from_layer < i ? waiting : later).push_back(std::move(w));
        if (waiting.empty()) return;
        if (later.empty()) {
            wants_.erase(found);
        } else {
            found->second = std::move(later);
        }
        for (Want& w : waiting) {
            std::uint32_t file = kNone;
            if (e.type == EntryType::File) {
                file = file_of(i, pos);
            } else if (e.type == EntryType::HardLink) {
                const std::string target = ntfs_fold(e.link_target);
                auto head = heads.find(target);
                if (head == heads.end()) {  // a link further down: follow it
                    w.from_layer = i;
                    w.target = e.link_target;
                    add_want(target, std::move(w));
                    continue;
                }
                file = file_of(i, head->second);
            } else {
                throw Error(ErrorKind::InvalidLayer, "hard link '" + w.link + "' names '" + w.target +
                                                         "', which is no file in the layer below it");
            }
            for (std::uint32_t n : w.nodes) nodes_[n].file = file;
        }
    }

    void add_want(const std::string& target, Want w) { wants_[target].push_back(std::move(w)); }

    std::uint32_t file_of(std::uint32_t layer, std::uint64_t index) {
        auto [it, added] = file_ids_.emplace(std::make_pair(layer, index), static_cast<std::uint32_t>(files_.size()));
        if (added) files_.push_back(FileSource{layer, index, kNone});
        return it->second;
    }

    // Whether a whiteout of a nearer layer covers `key` or one of its folders.
    bool hidden(const std::string& key) const {
        if (tombstones_.empty()) return false;
        for (std::size_t cut = key.find('/');; cut = key.find('/', cut + 1)) {
            if (tombstones_.count(key.substr(0, cut))) return true;
            if (cut == std::string::npos) return false;
        }
    }

    // Makes `e` (of layer i, at `pos`) the merged view's entry for `key`, unless a nearer
    // layer holds the name, or a non-folder in place of one of its folders. Folders on the
    // way that no nearer layer holds are claimed as this layer spells them.
    std::optional<std::uint32_t> claim(const std::string& key, const LayerEntry& e, std::uint32_t i,
                                       std::uint64_t pos) {
        const std::vector<std::string> spelled = components(e.path);
        std::uint32_t parent = kNone;
        std::size_t cut = 0;
        for (std::size_t c = 0; c + 1 < spelled.size(); ++c) {
            cut = key.find('/', c == 0 ? 0 : cut + 1);
            const std::string folder = key.substr(0, cut);
            auto it = by_key_.find(folder);
            if (it == by_key_.end()) {
                Node n;
                n.parent = parent;
                n.name = spelled[c];
                n.layer = i;
                it = by_key_.emplace(folder, add_node(std::move(n))).first;
            } else if (nodes_[it->second].type != EntryType::Directory) {
                return std::nullopt;  // a nearer layer replaced the folder
            }
            parent = it->second;
        }
        auto it = by_key_.find(key);
        if (it != by_key_.end()) {
            Node& n = nodes_[it->second];
            if (n.type == EntryType::Directory && !n.has_entry && e.type == EntryType::Directory) {
                n.has_entry = true;  // a folder a nearer layer only implied: this entry describes it
                n.layer = i;
                n.index = pos;
            }
            return std::nullopt;
        }
        Node n;
        n.parent = parent;
        n.name = spelled.back();
        n.type = e.type;
        n.has_entry = true;
        n.layer = i;
        n.index = pos;
        const std::uint32_t id = add_node(std::move(n));
        by_key_.emplace(key, id);
        return id;
    }

    std::uint32_t add_node(Node n) {
        if (nodes_.size() >= kNone) throw Error(ErrorKind::InvalidArgument, "too many entries to merge");
        nodes_.push_back(std::move(n));
        return static_cast<std::uint32_t>(nodes_.size() - 1);
    }

    std::string path_of(std::uint32_t node) const {
        std::vector<const std::string*> names;
        for (std::uint32_t n = node; n != kNone; n = nodes_[n].parent) names.push_back(&nodes_[n].name);
        std::string path;
        for (auto it = names.rbegin(); it != names.rend(); ++it) {
            if (!path.empty()) path += '/';
            path += **it;
        }
        return path;
    }

    // The output: every merged name with an entry, in canonical order; the first name of
    // each file carries its data, the others link to it.
    void order() {
        by_key_.clear();
        for (std::uint32_t n = 0; n < nodes_.size(); ++n) {
            if (!nodes_[n].has_entry) continue;
            Item it;
            it.path = path_of(n);
            it.key = canonical_order_key(it.path, false);
            it.node = n;
            items_.push_back(std::move(it));
        }
        std::sort(items_.begin(), items_.end(), [](const Item& a, const Item& b) { return a.key < b.key; });
        for (std::uint32_t k = 0; k < items_.size(); ++k) {
            Item& it = items_[k];
            it.key.clear();
            it.key.shrink_to_fit();
            const Node& n = nodes_[it.node];
            it.layer = n.layer;
            it.index = n.index;
            if (n.file != kNone) {
                FileSource& f = files_[n.file];
                if (f.carrier == kNone) {
                    f.carrier = k;
                    it.layer = f.layer;
                    it.index = f.index;
                } else {
                    it.link_to = f.carrier;
                }
            }
            if (it.link_to == kNone) last_use_[it.layer] = k + 1;
        }
    }

    // Reads the next entry of `c` (skipping the data of the last one); false at its end.
    bool pull(Cursor& c) {
        if (!c.reader->next(c.entry)) return false;
        ++c.pos;
        return true;
    }

    Cursor& seek(std::uint32_t layer, std::uint64_t index) {
        Cursor& c = cursors_[layer];
        const auto want = static_cast<std::int64_t>(index);
        if (c.reader && c.held && c.pos == want) return c;
        if (!c.reader || c.pos >= want) {
            c.reader = open_(layer);
            c.pos = -1;
        }
        c.held = false;
        while (c.pos < want) {
            if (!pull(c))
                throw Error(ErrorKind::StoreCorrupt, "layer " + std::to_string(layer) +
                                                         " of the chain changed while it was merged");
        }
        return c;
    }

    // Closes the readers of layers no later item needs.
    void release_unused() {
        for (std::size_t l = 0; l < cursors_.size(); ++l)
            if (cursors_[l].reader && last_use_[l] <= next_item_) cursors_[l] = Cursor{};
    }

    LayerOpener open_;
    std::vector<Node> nodes_;
    std::unordered_map<std::string, std::uint32_t> by_key_;  // folded path -> node (first pass)
    std::unordered_set<std::string> tombstones_;              // folded paths nearer layers delete
    std::map<std::string, std::uint32_t> root_owner_;         // HIVES / UTILITYVM -> layer
    std::unordered_map<std::string, std::vector<Want>> wants_;
    std::map<std::pair<std::uint32_t, std::uint64_t>, std::uint32_t> file_ids_;
    std::vector<FileSource> files_;
    std::vector<Item> items_;
    std::vector<Cursor> cursors_;
    std::vector<std::size_t> last_use_;  // per layer: one past the last item that reads it
    std::size_t next_item_ = 0;
    Cursor* streams_of_ = nullptr;        // the reader whose next entries may be streams of the last
    std::string stream_owner_, stream_target_;
    LayerReader* current_ = nullptr;      // where the data of the current entry comes from
};

}  // namespace

std::unique_ptr<LayerReader> merged_layer_reader(std::size_t layers, LayerOpener open) {
    return std::make_unique<MergedReader>(layers, std::move(open));
}

}  // namespace winlayer
