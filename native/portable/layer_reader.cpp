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

std::string canonical_key(const std::string& entry_path, EntryType type) {
    return canonical_order_key(entry_path, type == EntryType::Whiteout);
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

// The items of an export, in any order; ItemReader puts them in canonical order.
class ItemSource {
public:
    virtual ~ItemSource() = default;
    virtual std::size_t size() const = 0;
    virtual ExportItem item(std::size_t i) const = 0;
    // Item i's place in canonical order (what canonical_key gives for it).
    virtual std::string sort_key(std::size_t i) const {
        const ExportItem it = item(i);
        return canonical_key(it.entry.path, it.entry.type);
    }
};

class VectorItems : public ItemSource {
public:
    explicit VectorItems(std::vector<ExportItem> items) : items_(std::move(items)) {}
    std::size_t size() const override { return items_.size(); }
    ExportItem item(std::size_t i) const override { return items_[i]; }

private:
    std::vector<ExportItem> items_;
};

std::string blob_file(const std::string& layer_dir, std::uint32_t blob) {
    return join(join(layer_dir, kStreamsDirName), std::to_string(blob));
}

// The items of a stored layer, made from its records when asked for: a record, each of
// its alternate streams, each tombstone.
class StoredItems : public ItemSource {
public:
    explicit StoredItems(const std::string& layer_dir)
        : dir_(layer_dir), entries_(layer_dir, [this](std::size_t i, const EntryRecord& r) {
              const auto record = static_cast<std::uint32_t>(i);
              refs_.push_back({record, kMain});
              for (std::size_t s = 0; s < r.streams.size(); ++s)
                  refs_.push_back({record, static_cast<std::int32_t>(s)});
          }) {
        for (std::size_t t = 0; t < entries_.tombstones().size(); ++t)
            refs_.push_back({static_cast<std::uint32_t>(t), kTombstone});
    }

    std::size_t size() const override { return refs_.size(); }

    std::string sort_key(std::size_t i) const override {
        // A record's own item sorts by its path alone: no need to decode the rest.
        if (refs_[i].sub == kMain) return canonical_key(entries_.path(refs_[i].record), EntryType::File);
        return ItemSource::sort_key(i);
    }

    ExportItem item(std::size_t i) const override {
        const Ref ref = refs_[i];
        ExportItem it;
        if (ref.sub == kTombstone) {
            it.entry.path = entries_.tombstones()[ref.record];
            it.entry.type = EntryType::Whiteout;
            return it;
        }
        EntryRecord r = entries_.get(ref.record);
        if (ref.sub >= 0) {
            const StreamRecord& s = r.streams[static_cast<std::size_t>(ref.sub)];
            it.entry.path = r.entry.path + ":" + s.name;
            it.entry.type = EntryType::AlternateStream;
            it.entry.size = s.size;
            it.data = blob_file(dir_, s.blob);
            return it;
        }
        it.entry = std::move(r.entry);
        if (r.parent_link) {
            it.entry.type = EntryType::HardLink;
            it.entry.size = 0;
        } else if (it.entry.type == EntryType::File) {
            it.data = join(dir_, it.entry.path);
            it.group = r.group;
        }
        return it;
    }

private:
    static constexpr std::int32_t kMain = -1, kTombstone = -2;
    struct Ref {
        std::uint32_t record;  // or tombstone number
        std::int32_t sub;      // kMain, kTombstone or a stream's index
    };
    std::string dir_;
    std::vector<Ref> refs_;  // before entries_: filled while it is read
    StoredEntries entries_;
};

// Yields a source's items in canonical order. Only the order (4 bytes an item) is kept
// after sorting; each item is made again when its turn comes.
class ItemReader : public LayerReader {
public:
    explicit ItemReader(std::unique_ptr<ItemSource> source) : source_(std::move(source)) {
        std::vector<std::pair<std::string, std::uint32_t>> keyed;
        keyed.reserve(source_->size());
        for (std::size_t i = 0; i < source_->size(); ++i)
            keyed.emplace_back(source_->sort_key(i), static_cast<std::uint32_t>(i));
        std::sort(keyed.begin(), keyed.end());
        order_.reserve(keyed.size());
        for (const auto& k : keyed) order_.push_back(k.second);
    }

    bool next(LayerEntry& entry) override {
        current_ = File();
        ExportItem it;
        for (;;) {
            if (pos_ >= order_.size()) return false;
            it = source_->item(order_[pos_++]);
            if (it.entry.type != EntryType::AlternateStream) break;
            std::string file, stream;
            split_stream_path(it.entry.path, file, stream);
            if (file != skip_streams_of_) break;  // a link's streams are the file's
        }
        if (it.entry.type != EntryType::AlternateStream) skip_streams_of_.clear();
        // The first name of a hard-link group carries the data; the others link to it.
        if (it.group != 0 && it.entry.type == EntryType::File) {
            auto [leader, first] = leaders_.emplace(it.group, it.entry.path);
            if (!first) {
                it.entry.type = EntryType::HardLink;
                it.entry.link_target = leader->second;
                it.entry.size = 0;
                it.data.clear();
                skip_streams_of_ = it.entry.path;
            }
        }
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
    std::unique_ptr<ItemSource> source_;
    std::vector<std::uint32_t> order_;
    std::size_t pos_ = 0;
    std::unordered_map<std::uint32_t, std::string> leaders_;  // group -> first name
    std::string skip_streams_of_;
    DataOpener opener_;
    File current_;
    std::uint64_t remaining_ = 0;
};

class StoredPayloads : public PayloadStore {
public:
    explicit StoredPayloads(std::string layer_dir)
        : dir_(std::move(layer_dir)), entries_(dir_, [this](std::size_t i, const EntryRecord& r) {
              index_.emplace(name_key(r.entry.path), static_cast<std::uint32_t>(i));
          }) {}

    std::unique_ptr<Source> open(const std::string& entry_name, std::uint64_t size) override {
        std::string file = entry_name, stream;
        bool is_stream = split_stream_path(entry_name, file, stream);
        auto it = index_.find(name_key(file));
        std::string data;
        if (it != index_.end()) {
            const EntryRecord r = entries_.get(it->second);
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
    std::unordered_map<NameKey, std::uint32_t, NameKeyHash> index_;  // before entries_
    StoredEntries entries_;
    DataOpener opener_;
};

}  // namespace

std::unique_ptr<LayerReader> make_item_reader(std::vector<ExportItem> items) {
    return std::make_unique<ItemReader>(std::make_unique<VectorItems>(std::move(items)));
}

std::unique_ptr<LayerReader> make_layer_reader(const std::string& layer_dir) {
    return std::make_unique<ItemReader>(std::make_unique<StoredItems>(layer_dir));
}

std::unique_ptr<PayloadStore> make_payload_store(const std::string& layer_dir) {
    return std::make_unique<StoredPayloads>(layer_dir);
}

}  // namespace winlayer::portable
