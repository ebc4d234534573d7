#include "layer_reader.hpp"

#include <algorithm>
#include <optional>
#include <unordered_map>

#include "../core/error.hpp"
#include "../core/path_rules.hpp"
#include "chain.hpp"
#include "metadata.hpp"
#include "platform.hpp"

namespace winlayer::portable {

namespace {

// Component-wise byte order: '/' becomes NUL, which sorts before every name byte. A
// folder's whiteouts get a NUL before their name, a file's streams two.
std::string sort_key(const ExportItem& item) {
    const LayerEntry& e = item.entry;
    std::string path = e.path, stream;
    if (e.type == EntryType::AlternateStream) split_stream_path(e.path, path, stream);
    std::string key = path;
    std::replace(key.begin(), key.end(), '/', '\0');
    if (e.type == EntryType::Whiteout) {
        std::size_t cut = key.rfind('\0');
        key.insert(cut == std::string::npos ? 0 : cut + 1, 1, '\0');
    } else if (e.type == EntryType::AlternateStream) {
        key.append(3, '\0');
        key += stream;
    }
    return key;
}

class FileDataSource : public Source {
public:
    explicit FileDataSource(File f) : f_(std::move(f)) {}
    std::size_t read(std::uint8_t* buf, std::size_t n) override { return f_.read(buf, n); }

private:
    File f_;
};

// Opens stored data without following a symlink, keeping the folder open for the next
// file (an export reads a folder's files one after the other).
class DataOpener {
public:
    File open(const std::string& path) {
        std::string dir = dir_name(path);
        if (!tree_ || tree_->root() != dir) {
            tree_.reset();
            tree_.emplace(dir);
        }
        return tree_->open_read(base_name(path));
    }

private:
    std::optional<Tree> tree_;
};

class ItemReader : public LayerReader {
public:
    explicit ItemReader(std::vector<ExportItem> items) : items_(std::move(items)) {
        sort_items();
        std::unordered_map<std::uint32_t, std::string> leaders;  // group -> first name
        std::string skip_streams_of;
        std::size_t kept = 0;
        for (std::size_t i = 0; i < items_.size(); ++i) {
            ExportItem& it = items_[i];
            if (it.entry.type == EntryType::AlternateStream) {
                std::string file, stream;
                split_stream_path(it.entry.path, file, stream);
                if (file == skip_streams_of) continue;  // a link's streams are the file's
            } else {
                skip_streams_of.clear();
            }
            if (it.group != 0 && it.entry.type == EntryType::File) {
                auto [leader, first] = leaders.emplace(it.group, it.entry.path);
                if (!first) {
                    it.entry.type = EntryType::HardLink;
                    it.entry.link_target = leader->second;
                    it.entry.size = 0;
                    it.data.clear();
                    skip_streams_of = it.entry.path;
                }
            }
            if (kept != i) items_[kept] = std::move(it);
            ++kept;
        }
        items_.resize(kept);
    }

    bool next(LayerEntry& entry) override {
        current_ = File();
        if (pos_ >= items_.size()) return false;
        const ExportItem& it = items_[pos_++];
        entry = it.entry;
        remaining_ = 0;
        if (!it.data.empty() &&
            (it.entry.type == EntryType::File || it.entry.type == EntryType::AlternateStream)) {
            current_ = opener_.open(it.data);
            NodeStat st = current_.stat();
            if (st.size != it.entry.size)
                throw Error(ErrorKind::StoreCorrupt,
                            "stored file size " + std::to_string(st.size) + " differs from its metadata (" +
                                std::to_string(it.entry.size) + ")")
                    .with_path(it.data);
            remaining_ = it.entry.size;
        }
        return true;
    }

    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        if (remaining_ == 0) return 0;
        std::size_t got = current_.read(buf, static_cast<std::size_t>(std::min<std::uint64_t>(n, remaining_)));
        if (got == 0)
            throw Error(ErrorKind::StoreCorrupt, "stored file is shorter than its metadata says")
                .with_path(current_.path());
        remaining_ -= got;
        return got;
    }

private:
    // Sorts items_ by sort_key, in place: the keys are made once, and the items are moved
    // along the cycles of the permutation rather than into a second vector.
    void sort_items() {
        std::vector<std::pair<std::string, std::size_t>> order;
        order.reserve(items_.size());
        for (std::size_t i = 0; i < items_.size(); ++i) order.emplace_back(sort_key(items_[i]), i);
        std::sort(order.begin(), order.end());
        std::vector<std::size_t> from(order.size());
        for (std::size_t k = 0; k < order.size(); ++k) from[k] = order[k].second;
        order.clear();
        order.shrink_to_fit();
        for (std::size_t start = 0; start < from.size(); ++start) {
            if (from[start] == start) continue;
            ExportItem held = std::move(items_[start]);
            std::size_t k = start;
            while (from[k] != start) {
                const std::size_t next = from[k];
                items_[k] = std::move(items_[next]);
                from[k] = k;
                k = next;
            }
            items_[k] = std::move(held);
            from[k] = k;
        }
    }

    std::vector<ExportItem> items_;
    std::size_t pos_ = 0;
    DataOpener opener_;
    File current_;
    std::uint64_t remaining_ = 0;
};

std::string blob_file(const std::string& layer_dir, std::uint32_t blob) {
    return join(join(layer_dir, kStreamsDirName), std::to_string(blob));
}

// The export items of a stored layer; takes what it can from `meta` (its entries are
// moved from).
std::vector<ExportItem> layer_items(const std::string& layer_dir, LayerMeta& meta) {
    std::vector<ExportItem> items;
    std::size_t count = meta.entries.size() + meta.tombstones.size();
    for (const auto& r : meta.entries) count += r.streams.size();
    items.reserve(count);
    for (auto& r : meta.entries) {
        ExportItem it;
        it.entry = std::move(r.entry);
        if (r.parent_link) {
            it.entry.type = EntryType::HardLink;
            it.entry.size = 0;
        } else if (it.entry.type == EntryType::File) {
            it.data = join(layer_dir, it.entry.path);
            it.group = r.group;
        }
        const std::string path = r.streams.empty() ? std::string() : it.entry.path;
        items.push_back(std::move(it));
        for (const auto& s : r.streams) {
            ExportItem st;
            st.entry.path = path + ":" + s.name;
            st.entry.type = EntryType::AlternateStream;
            st.entry.size = s.size;
            st.data = blob_file(layer_dir, s.blob);
            items.push_back(std::move(st));
        }
    }
    for (const auto& t : meta.tombstones) {
        ExportItem it;
        it.entry.path = t;
        it.entry.type = EntryType::Whiteout;
        items.push_back(std::move(it));
    }
    return items;
}

class StoredPayloads : public PayloadStore {
public:
    explicit StoredPayloads(std::string layer_dir) : dir_(std::move(layer_dir)), meta_(read_meta(dir_)) {
        for (std::size_t i = 0; i < meta_.entries.size(); ++i)
            index_.emplace(path_key(meta_.entries[i].entry.path), i);
    }

    std::unique_ptr<Source> open(const std::string& entry_name, std::uint64_t size) override {
        std::string file = entry_name, stream;
        bool is_stream = split_stream_path(entry_name, file, stream);
        auto it = index_.find(path_key(file));
        std::string data;
        if (it != index_.end()) {
            const EntryRecord& r = meta_.entries[it->second];
            if (!is_stream) {
                data = join(dir_, r.entry.path);
            } else {
                for (const auto& s : r.streams)
                    if (path_key(s.name) == path_key(stream)) data = blob_file(dir_, s.blob);
            }
        }
        if (data.empty())
            throw Error(ErrorKind::StoreCorrupt, "the layer holds no payload for tar entry " + entry_name)
                .with_path(dir_);
        File f = opener_.open(data);
        if (f.stat().size != size)
            throw Error(ErrorKind::StoreCorrupt,
                        "stored payload of " + entry_name + " is not the imported one (size differs)")
                .with_path(data);
        return std::make_unique<FileDataSource>(std::move(f));
    }

private:
    std::string dir_;
    LayerMeta meta_;
    std::unordered_map<std::string, std::size_t> index_;
    DataOpener opener_;
};

}  // namespace

std::unique_ptr<LayerReader> make_item_reader(std::vector<ExportItem> items) {
    return std::make_unique<ItemReader>(std::move(items));
}

std::unique_ptr<LayerReader> make_layer_reader(const std::string& layer_dir) {
    LayerMeta meta = read_meta(layer_dir);
    return make_item_reader(layer_items(layer_dir, meta));
}

std::unique_ptr<PayloadStore> make_payload_store(const std::string& layer_dir) {
    return std::make_unique<StoredPayloads>(layer_dir);
}

}  // namespace winlayer::portable
