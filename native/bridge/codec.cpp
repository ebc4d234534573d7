// Bindings of the Windows layer-tar semantics (native/core/layer_tar, backup_stream,
// path_rules, security_descriptor): the layer-tar lister behind winlayer.layertar, and
// the format helpers (backup streams, EAs, reparse points, security descriptors, path
// rules) for tools and tests.
#include <pybind11/stl.h>

#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/backup_stream.hpp"
#include "../core/error.hpp"
#include "../core/layer_tar.hpp"
#include "../core/path_rules.hpp"
#include "../core/security_descriptor.hpp"
#include "bridge.hpp"
#include "pystream.hpp"

namespace winlayer::bridge {

namespace {

py::str to_str(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<py::ssize_t>(s.size()), "surrogateescape");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

const char* type_name(EntryType t) {
    switch (t) {
    case EntryType::Directory: return "directory";
    case EntryType::File: return "file";
    case EntryType::Symlink: return "symlink";
    case EntryType::AlternateStream: return "alternate_stream";
    case EntryType::HardLink: return "hard_link";
    case EntryType::Whiteout: return "whiteout";
    }
    return "file";
}

EntryType type_from_name(const std::string& s) {
    for (EntryType t : {EntryType::Directory, EntryType::File, EntryType::Symlink, EntryType::AlternateStream,
                        EntryType::HardLink, EntryType::Whiteout})
        if (s == type_name(t)) return t;
    throw py::value_error("unknown entry type '" + s + "'");
}

py::object sid_tuple(const std::optional<Sid>& sid) {
    if (!sid) return py::none();
    return py::make_tuple(sid->sid, sid->alias, sid->name);
}

// --- the lister ----------------------------------------------------------------------

struct Listed {
    LayerEntry entry;
    std::optional<Sid> owner;
    std::optional<Sid> group;
};

// A LayerWriter that keeps each entry's metadata (not its data) for the next batch.
class ListingWriter : public LayerWriter {
public:
    void add(const LayerEntry& e) override {
        Listed item{e, {}, {}};
        if (!e.security_descriptor.empty()) {
            auto it = owners_.find(e.security_descriptor);
            if (it == owners_.end()) {
                // Layers hold few distinct descriptors: parse each once.
                if (owners_.size() > 4096) owners_.clear();
                SecurityDescriptorInfo info = parse_security_descriptor(e.security_descriptor);
                it = owners_.emplace(e.security_descriptor, std::make_pair(info.owner, info.group)).first;
            }
            item.owner = it->second.first;
            item.group = it->second.second;
        }
        batch.push_back(std::move(item));
    }
    void write(const std::uint8_t*, std::size_t) override {}
    void add_link(const std::string& path, const std::string& target) override {
        Listed item;
        item.entry.path = path;
        item.entry.type = EntryType::HardLink;
        item.entry.link_target = target;
        batch.push_back(std::move(item));
    }
    void remove(const std::string& path) override {
        Listed item;
        item.entry.path = path;
        item.entry.type = EntryType::Whiteout;
        batch.push_back(std::move(item));
    }
    void commit(const CommitInfo& info) override { committed = info; }
    void abort() noexcept override {}

    std::vector<Listed> batch;
    std::optional<CommitInfo> committed;

private:
    std::unordered_map<std::string, std::pair<std::optional<Sid>, std::optional<Sid>>> owners_;
};

class LayerTarLister {
public:
    LayerTarLister(py::object source, bool allow_parent_links, std::string expected_digest)
        : source_(source_from_python(std::move(source))) {
        options_.allow_parent_links = allow_parent_links;
        options_.expected_digest = std::move(expected_digest);
        importer_ = std::make_unique<LayerTarImporter>(*source_, writer_, options_);
    }

    ~LayerTarLister() {
        // The source may call into Python: drop it (and the importer reading it) with
        // the GIL held, which it is here.
        importer_.reset();
        source_.reset();
    }

    // Up to `max_entries` entries as tuples; an empty list at the end, once the diffID
    // is known (and checked against the expected digest).
    py::list next_batch(std::size_t max_entries) {
        if (max_entries == 0) throw py::value_error("max_entries must be positive");
        writer_.batch.clear();
        if (!done_) {
            py::gil_scoped_release nogil;
            while (writer_.batch.size() < max_entries) {
                if (!importer_->step()) {
                    importer_->commit();
                    done_ = true;
                    break;
                }
            }
        }
        py::list out(writer_.batch.size());
        std::size_t i = 0;
        for (const Listed& l : writer_.batch) out[i++] = entry_tuple(l);
        writer_.batch.clear();
        return out;
    }

    py::object diff_id() const {
        if (!writer_.committed) return py::none();
        return py::str(writer_.committed->diff_id);
    }
    py::object data_size() const {
        if (!writer_.committed) return py::none();
        return py::int_(writer_.committed->size);
    }
    std::uint64_t offset() const { return importer_->offset(); }

private:
    static py::tuple entry_tuple(const Listed& l) {
        const LayerEntry& e = l.entry;
        py::list eas;
        for (const auto& [name, value] : e.extended_attributes) eas.append(py::make_tuple(to_str(name), py::bytes(value)));
        return py::make_tuple(to_str(e.path), type_name(e.type), e.size, e.attributes,
                              py::make_tuple(e.times.creation, e.times.last_access, e.times.last_write, e.times.change),
                              py::bytes(e.security_descriptor), sid_tuple(l.owner), sid_tuple(l.group),
                              to_str(e.link_target), e.mount_point, eas);
    }

    std::unique_ptr<Source> source_;
    ListingWriter writer_;
    ImportOptions options_;
    std::unique_ptr<LayerTarImporter> importer_;
    bool done_ = false;
};

// --- a traced import ------------------------------------------------------------------

// Records every call import_layer_tar makes, like a backend writer that keeps nothing.
// Hard links to targets it has not been given fail as a writer without parents does.
class TracingWriter : public LayerWriter {
public:
    void add(const LayerEntry& e) override {
        if (e.type == EntryType::File) seen_.insert(ntfs_fold(e.path));
        calls.push_back({"add", e.path, type_name(e.type), {}});
    }
    void write(const std::uint8_t* data, std::size_t n) override {
        if (!calls.empty() && calls.back().op == "write") {
            calls.back().arg.append(reinterpret_cast<const char*>(data), n);
        } else {
            calls.push_back({"write", {}, {}, std::string(reinterpret_cast<const char*>(data), n)});
        }
    }
    void add_link(const std::string& path, const std::string& target) override {
        calls.push_back({"add_link", path, target, {}});
        if (!seen_.count(ntfs_fold(target)))
            throw Error::invalid_layer("hard link target is in no parent layer", "", -1);
        seen_.insert(ntfs_fold(path));
    }
    void remove(const std::string& path) override { calls.push_back({"remove", path, {}, {}}); }
    void commit(const CommitInfo& info) override {
        calls.push_back({"commit", info.diff_id, std::to_string(info.size), info.tar_split});
    }
    void abort() noexcept override { calls.push_back({"abort", {}, {}, {}}); }

    struct Call {
        std::string op, a, b, arg;
    };
    std::vector<Call> calls;

private:
    std::unordered_set<std::string> seen_;
};

py::tuple trace_import(py::object source, const std::string& expected_digest, bool allow_parent_links) {
    std::unique_ptr<Source> src = source_from_python(std::move(source));
    TracingWriter writer;
    ImportOptions options;
    options.expected_digest = expected_digest;
    options.allow_parent_links = allow_parent_links;
    std::optional<Error> failure;
    {
        py::gil_scoped_release nogil;
        try {
            import_layer_tar(*src, writer, options);
        } catch (const Error& e) {
            failure = e;
        }
    }
    src.reset();
    py::list calls;
    for (const auto& c : writer.calls) calls.append(py::make_tuple(c.op, to_str(c.a), to_str(c.b), py::bytes(c.arg)));
    py::object error = py::none();
    if (failure) {
        const Error& e = *failure;
        error = py::module_::import("winlayer.errors")
                    .attr("from_native")(error_kind_name(e.kind), e.code, e.message, e.operation, e.path,
                                         to_str(e.entry), e.offset, e.expected, e.actual);
    }
    return py::make_tuple(calls, error);
}

// --- export from Python entries --------------------------------------------------------

struct PyEntry {
    LayerEntry entry;
    std::string data;
};

LayerEntry entry_from_dict(const py::dict& d, std::string& data) {
    LayerEntry e;
    e.path = d["path"].cast<std::string>();
    e.type = type_from_name(d["type"].cast<std::string>());
    auto get = [&](const char* key) -> py::object {
        return d.contains(key) ? py::reinterpret_borrow<py::object>(d[key]) : py::none();
    };
    if (!get("attributes").is_none()) e.attributes = get("attributes").cast<std::uint32_t>();
    if (!get("times").is_none()) {
        auto t = get("times").cast<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t>>();
        e.times = FileTimes{std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t)};
    }
    if (!get("security_descriptor").is_none()) e.security_descriptor = get("security_descriptor").cast<std::string>();
    if (!get("extended_attributes").is_none())
        e.extended_attributes = get("extended_attributes").cast<std::vector<std::pair<std::string, std::string>>>();
    if (!get("link_target").is_none()) e.link_target = get("link_target").cast<std::string>();
    if (!get("mount_point").is_none()) e.mount_point = get("mount_point").cast<bool>();
    if (!get("reparse_data").is_none()) e.reparse_data = get("reparse_data").cast<std::string>();
    if (!get("data").is_none()) data = get("data").cast<std::string>();
    e.size = data.size();
    return e;
}

class VectorReader : public LayerReader {
public:
    explicit VectorReader(std::vector<PyEntry> entries) : entries_(std::move(entries)) {}
    bool next(LayerEntry& entry) override {
        if (next_ >= entries_.size()) return false;
        current_ = &entries_[next_++];
        entry = current_->entry;
        pos_ = 0;
        return true;
    }
    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        std::size_t k = std::min(n, current_->data.size() - pos_);
        std::copy_n(current_->data.data() + pos_, k, buf);
        pos_ += k;
        return k;
    }

private:
    std::vector<PyEntry> entries_;
    std::size_t next_ = 0;
    const PyEntry* current_ = nullptr;
    std::size_t pos_ = 0;
};

class StringSink : public Sink {
public:
    void write(const std::uint8_t* data, std::size_t n) override { out.append(reinterpret_cast<const char*>(data), n); }
    std::string out;
};

py::bytes export_entries(const py::list& entries) {
    std::vector<PyEntry> converted;
    for (const py::handle& h : entries) {
        PyEntry p;
        p.entry = entry_from_dict(h.cast<py::dict>(), p.data);
        converted.push_back(std::move(p));
    }
    StringSink sink;
    {
        py::gil_scoped_release nogil;
        VectorReader reader(std::move(converted));
        export_layer_tar(reader, sink);
    }
    return py::bytes(sink.out);
}

// --- backup streams ------------------------------------------------------------------

py::bytes encode_backup_stream(const py::list& entries) {
    StringSink sink;
    BackupStreamEncoder encoder(sink);
    for (const py::handle& h : entries) {
        std::string data;
        LayerEntry e = entry_from_dict(h.cast<py::dict>(), data);
        encoder.begin(e);
        encoder.write(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
    }
    encoder.finish();
    return py::bytes(sink.out);
}

class EventHandler : public BackupStreamHandler {
public:
    void security(std::string sd) override { events.append(py::make_tuple("security", py::bytes(sd))); }
    void extended_attributes(ExtendedAttributes eas) override {
        py::list l;
        for (auto& [n, v] : eas) l.append(py::make_tuple(to_str(n), py::bytes(v)));
        events.append(py::make_tuple("ea", l));
    }
    void reparse(std::string data) override { events.append(py::make_tuple("reparse", py::bytes(data))); }
    void begin_data(const std::string& stream, std::uint64_t size) override {
        stream_ = stream;
        declared_ = size == kUnknownSize ? py::object(py::none()) : py::object(py::int_(size));
        data_.clear();
    }
    void data(const std::uint8_t* b, std::size_t n) override { data_.append(reinterpret_cast<const char*>(b), n); }
    void end_data(std::uint64_t size) override {
        events.append(py::make_tuple("data", to_str(stream_), declared_, size, py::bytes(data_)));
    }
    py::list events;

private:
    std::string stream_;
    py::object declared_;
    std::string data_;
};

py::list decode_backup_stream(const py::bytes& data, std::size_t chunk_size) {
    std::string s = data;
    EventHandler handler;
    BackupStreamDecoder decoder(handler);
    const auto* p = reinterpret_cast<const std::uint8_t*>(s.data());
    std::size_t step = chunk_size == 0 ? s.size() : chunk_size;
    for (std::size_t i = 0; i < s.size(); i += step) decoder.feed(p + i, std::min(step, s.size() - i));
    decoder.finish();
    return handler.events;
}

py::dict describe_security_descriptor(const py::bytes& sd) {
    SecurityDescriptorInfo info = parse_security_descriptor(sd);
    py::dict d;
    d["control"] = info.control;
    d["owner"] = sid_tuple(info.owner);
    d["group"] = sid_tuple(info.group);
    d["has_dacl"] = info.has_dacl;
    d["has_sacl"] = info.has_sacl;
    d["dacl_aces"] = info.dacl_aces;
    return d;
}

}  // namespace

void bind_codec(py::module_& m) {
    py::class_<LayerTarLister>(m, "LayerTarLister",
                               "Runs the layer-tar import validation over a tar and hands out its entries.")
        .def(py::init<py::object, bool, std::string>(), py::arg("source"), py::kw_only(),
             py::arg("allow_parent_links") = false, py::arg("expected_digest") = "")
        .def("next_batch", &LayerTarLister::next_batch, py::arg("max_entries") = 1024,
             "Up to max_entries entry tuples; [] at the end (the diffID is then known).")
        .def_property_readonly("diff_id", &LayerTarLister::diff_id)
        .def_property_readonly("data_size", &LayerTarLister::data_size)
        .def_property_readonly("offset", &LayerTarLister::offset);

    m.def("trace_layer_import", &trace_import, py::arg("source"), py::kw_only(), py::arg("expected_digest") = "",
          py::arg("allow_parent_links") = true,
          "import_layer_tar into a writer that records its calls (op, path, detail, data): returns "
          "(calls, error or None). Hard links to targets not in the tar fail in the writer, as "
          "with no parent layers.");
    m.def("export_layer_entries", &export_entries, py::arg("entries"),
          "The canonical layer tar (bytes) of a list of entry dicts, in order.");
    m.def("encode_backup_stream", &encode_backup_stream, py::arg("entries"),
          "The Win32 backup stream of a file and its alternate streams (entry dicts with data).");
    m.def("decode_backup_stream", &decode_backup_stream, py::arg("data"), py::arg("chunk_size") = 0,
          "The records of a backup stream as events, fed in chunks of chunk_size bytes.");
    m.def("encode_extended_attributes", [](const ExtendedAttributes& eas) { return py::bytes(encode_extended_attributes(eas)); },
          py::arg("eas"));
    m.def("decode_extended_attributes", [](const py::bytes& data) {
              py::list l;
              for (auto& [n, v] : decode_extended_attributes(data)) l.append(py::make_tuple(to_str(n), py::bytes(v)));
              return l;
          },
          py::arg("data"));
    m.def("encode_reparse_point", [](const std::string& target, bool mount_point) {
              return py::bytes(encode_reparse_point(target, mount_point));
          },
          py::arg("target"), py::arg("mount_point") = false);
    m.def("decode_reparse_point", [](const py::bytes& data) {
              ReparsePoint rp = decode_reparse_point(data);
              return py::make_tuple(to_str(rp.target), rp.mount_point, rp.relative);
          },
          py::arg("data"));
    m.def("layer_path_problem", &layer_path_problem, py::arg("path"),
          "Why a layer path breaks the Windows path rules, or '' when it is valid.");
    m.def("stream_name_problem", &stream_name_problem, py::arg("name"));
    m.def("ntfs_fold", &ntfs_fold, py::arg("name"), "The case-folded key NTFS compares names by.");
    m.def("describe_security_descriptor", &describe_security_descriptor, py::arg("sd"));
    m.def("sddl_to_security_descriptor", [](const std::string& sddl) { return py::bytes(sddl_to_security_descriptor(sddl)); },
          py::arg("sddl"));
}

}  // namespace winlayer::bridge
