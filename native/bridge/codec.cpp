// Bindings of the Windows layer-tar semantics (native/core/layer_tar, backup_stream,
// path_rules, security_descriptor): the layer-tar lister behind winlayer.layertar, and
// the format helpers (backup streams, EAs, reparse points, security descriptors, path
// rules) for tools and tests.
#include <pybind11/stl.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/backup_stream.hpp"
#include "../core/bounded_queue.hpp"
#include "../core/error.hpp"
#include "../core/layer_tar.hpp"
#include "../core/memory_io.hpp"
#include "../core/path_rules.hpp"
#include "../core/security_descriptor.hpp"
#include "bridge.hpp"
#include "pystream.hpp"

namespace winlayer::bridge {

const char* entry_type_name(EntryType t) {
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

namespace {

// Every EntryType, in enum order.
constexpr EntryType kEntryTypes[] = {EntryType::Directory,       EntryType::File,     EntryType::Symlink,
                                     EntryType::AlternateStream, EntryType::HardLink, EntryType::Whiteout};

EntryType type_from_name(const std::string& s) {
    for (EntryType t : kEntryTypes)
        if (s == entry_type_name(t)) return t;
    throw py::value_error("unknown entry type '" + s + "'");
}

py::object sid_tuple(const std::optional<Sid>& sid) {
    if (!sid) return py::none();
    return py::make_tuple(sid->sid, sid->alias, sid->name);
}

// --- the lister ----------------------------------------------------------------------

// An entry as listed: its metadata and the owner and group of its security descriptor.
struct Listed {
    LayerEntry entry;
    std::optional<Sid> owner;
    std::optional<Sid> group;
};

// A LayerWriter that keeps each entry's metadata (not its data) for the next batch. It
// runs on the producer thread, so descriptors are parsed there, off the GIL.
class ListingWriter : public LayerWriter {
public:
    explicit ListingWriter(const std::atomic<bool>& cancelled) : cancelled_(cancelled) {}
    void add(const LayerEntry& e) override {
        check();
        Listed& item = batch.emplace_back();
        item.entry = e;
        if (!e.security_descriptor.empty()) {
            if (e.security_descriptor != last_sd_) {
                last_ = parse_security_descriptor(e.security_descriptor);  // validated by the import
                last_sd_ = e.security_descriptor;
            }
            item.owner = last_.owner;
            item.group = last_.group;
        }
    }
    // Data is not kept, but a long entry is where a cancelled listing should stop.
    void write(const std::uint8_t*, std::size_t) override { check(); }
    void add_link(const std::string& path, const std::string& target) override {
        LayerEntry& e = batch.emplace_back().entry;
        e.path = path;
        e.type = EntryType::HardLink;
        e.link_target = target;
    }
    void remove(const std::string& path) override {
        LayerEntry& e = batch.emplace_back().entry;
        e.path = path;
        e.type = EntryType::Whiteout;
    }
    void commit(const CommitInfo& info) override { committed = info; }
    void abort() noexcept override {}

    std::vector<Listed> batch;
    std::optional<CommitInfo> committed;

private:
    void check() const {
        if (cancelled_) throw Error(ErrorKind::Internal, "listing cancelled");
    }
    const std::atomic<bool>& cancelled_;
    std::string last_sd_;
    SecurityDescriptorInfo last_;
};

// Pauses Python's cyclic GC while a batch of tuples is made (none of them can form a
// cycle; the collections their allocations would trigger find nothing). The GIL is held
// throughout, so no other Python code sees the pause.
class GcPause {
public:
    GcPause() {
#if PY_VERSION_HEX >= 0x030A0000
        was_enabled_ = PyGC_Disable() != 0;
#endif
    }
    ~GcPause() {
#if PY_VERSION_HEX >= 0x030A0000
        if (was_enabled_) PyGC_Enable();
#endif
    }
    GcPause(const GcPause&) = delete;
    GcPause& operator=(const GcPause&) = delete;

private:
    bool was_enabled_ = false;
};

// Lists a layer tar: a producer thread runs the import (reading, hashing, validating,
// without the GIL) into a bounded queue of batches while Python turns earlier batches
// into objects, so the two overlap. At most kQueuedBatches batches wait at a time.
class LayerTarLister {
public:
    LayerTarLister(py::object source, bool allow_parent_links, std::string expected_digest,
                   std::size_t batch_size, py::object entry_type, py::object account_type)
        : source_(source_from_python(std::move(source))),
          batch_size_(batch_size),
          writer_(cancelled_),
          entry_type_(tuple_type(std::move(entry_type), "entry_type")),
          account_type_(tuple_type(std::move(account_type), "account_type")) {
        if (batch_size == 0) throw py::value_error("batch_size must be positive");
        options_.allow_parent_links = allow_parent_links;
        options_.expected_digest = std::move(expected_digest);
        options_.record_tar_split = false;
        importer_ = std::make_unique<LayerTarImporter>(*source_, writer_, options_);
        for (EntryType t : kEntryTypes) type_names_.push_back(py::str(entry_type_name(t)));
        producer_ = std::thread([this] { produce(); });
    }

    ~LayerTarLister() {
        close();
        // The source may hold Python objects: drop it (and the importer reading it) here,
        // with the GIL.
        importer_.reset();
        source_.reset();
    }

    // Stops the producer (at its next entry or data chunk) and waits for it. Idempotent.
    void close() {
        cancelled_ = true;
        queue_.close();  // wakes a producer waiting for room
        if (producer_.joinable()) {
            // The producer may be waiting for the GIL to read a Python stream.
            py::gil_scoped_release nogil;
            producer_.join();
        }
    }

    // The next batch of entry tuples; an empty list at the end, once the diffID is known
    // (and checked against the expected digest). Errors of the import are raised here,
    // after the entries read before them.
    py::list next_batch() {
        if (cancelled_) throw py::value_error("the listing is closed");
        std::optional<std::vector<Listed>> next;
        {
            py::gil_scoped_release nogil;
            next = queue_.pop();
        }
        if (!next) {
            queue_.raise_if_failed();
            return py::list();
        }
        const std::vector<Listed>& batch = *next;
        GcPause pause;
        py::list out(batch.size());
        std::size_t i = 0;
        for (const Listed& l : batch) out[i++] = entry_tuple(l);
        return out;
    }

    py::object diff_id() {
        std::lock_guard<std::mutex> lock(commit_mutex_);
        if (!writer_.committed) return py::none();
        return py::str(writer_.committed->diff_id);
    }
    py::object data_size() {
        std::lock_guard<std::mutex> lock(commit_mutex_);
        if (!writer_.committed) return py::none();
        return py::int_(writer_.committed->size);
    }

private:
    static constexpr std::size_t kQueuedBatches = 4;

    static py::object tuple_type(py::object type, const char* what) {
        if (!type.is_none() && !(PyType_Check(type.ptr()) &&
                                 PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(type.ptr()), &PyTuple_Type)))
            throw py::type_error(std::string(what) + " must be a tuple subclass (e.g. a NamedTuple) or None");
        return type;
    }

    // `fields` as an instance of `type` (a tuple subclass such as a NamedTuple), made the
    // way tuple.__new__(type, fields) makes it, without a Python-level __new__ per entry.
    static py::object as_instance(const py::object& type, py::tuple fields) {
        if (type.is_none()) return std::move(fields);
        py::tuple args = py::make_tuple(std::move(fields));
        PyObject* o = PyTuple_Type.tp_new(reinterpret_cast<PyTypeObject*>(type.ptr()), args.ptr(), nullptr);
        if (!o) throw py::error_already_set();
        return py::reinterpret_steal<py::object>(o);
    }

    // One Python object per SID (layers use few SIDs, even when descriptors vary).
    py::object account(const std::optional<Sid>& sid) {
        if (!sid) return py::none();
        auto it = accounts_.find(sid->sid);
        if (it != accounts_.end()) return it->second;
        if (accounts_.size() >= kCacheLimit) accounts_.clear();
        py::object a = as_instance(account_type_, py::make_tuple(sid->sid, sid->alias, sid->name));
        return accounts_.emplace(sid->sid, std::move(a)).first->second;
    }

    void produce() {
        writer_.batch.reserve(batch_size_);
        try {
            bool more = true;
            while (more) {
                more = importer_->step();
                if (!more) {
                    // Under the lock: diff_id() reads what commit() stores.
                    std::lock_guard<std::mutex> lock(commit_mutex_);
                    importer_->commit();
                }
                if (writer_.batch.size() < batch_size_ && more) continue;
                if (!hand_over()) return;  // closed
            }
            queue_.finish();
        } catch (...) {
            const std::exception_ptr error = rethrowable_current_exception();
            hand_over();  // the entries before the error are still listed
            queue_.finish(error);
        }
    }

    // Queues the batch being filled (waiting for room) and starts the next; false once the
    // lister is closed.
    bool hand_over() {
        if (writer_.batch.empty()) return !queue_.closed();
        if (!queue_.push(std::move(writer_.batch))) return false;
        writer_.batch = std::vector<Listed>();
        writer_.batch.reserve(batch_size_);  // no regrowth (and moves) while filling
        return true;
    }

private:
    // One bytes object per distinct descriptor (layers usually share a few).
    py::object descriptor_bytes(const std::string& sd) {
        auto it = descriptors_.find(sd);
        if (it != descriptors_.end()) return it->second;
        if (descriptors_.size() >= kCacheLimit) descriptors_.clear();
        return descriptors_.emplace(sd, py::bytes(sd)).first->second;
    }

    py::object entry_tuple(const Listed& l) {
        const LayerEntry& e = l.entry;
        py::tuple eas(e.extended_attributes.size());
        std::size_t i = 0;
        for (const auto& [name, value] : e.extended_attributes) eas[i++] = py::make_tuple(decode_utf8(name), py::bytes(value));
        return as_instance(
            entry_type_,
            py::make_tuple(decode_utf8(e.path), type_names_[static_cast<std::size_t>(e.type)], e.size, e.attributes,
                           py::make_tuple(e.times.creation, e.times.last_access, e.times.last_write, e.times.change),
                           descriptor_bytes(e.security_descriptor), account(l.owner), account(l.group),
                           decode_utf8(e.link_target), e.mount_point, std::move(eas)));
    }

    std::atomic<bool> cancelled_{false};  // close() was called
    std::unique_ptr<Source> source_;
    std::size_t batch_size_;
    ListingWriter writer_;  // the producer's; `committed` is read under mutex_
    ImportOptions options_;
    std::unique_ptr<LayerTarImporter> importer_;
    py::object entry_type_;    // tuple subclass the entries are made as, or None
    py::object account_type_;  // tuple subclass owners and groups are made as, or None
    std::vector<py::str> type_names_;  // indexed by EntryType
    static constexpr std::size_t kCacheLimit = 4096;
    std::unordered_map<std::string, py::object> descriptors_;  // descriptor -> bytes
    std::unordered_map<std::string, py::object> accounts_;     // SID string -> account

    std::mutex commit_mutex_;  // guards writer_.committed
    BoundedQueue<std::vector<Listed>> queue_{kQueuedBatches};
    std::thread producer_;  // last: started once everything above exists
};

// --- a traced import ------------------------------------------------------------------

// Records every call import_layer_tar makes, like a backend writer that keeps nothing.
// Hard links to targets it has not been given fail as a writer without parents does.
class TracingWriter : public LayerWriter {
public:
    void add(const LayerEntry& e) override {
        if (e.type == EntryType::File) seen_.insert(ntfs_fold(e.path));
        calls.push_back({"add", e.path, entry_type_name(e.type), {}});
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
    for (const auto& c : writer.calls) calls.append(py::make_tuple(c.op, decode_utf8(c.a), decode_utf8(c.b), py::bytes(c.arg)));
    py::object error = py::none();
    if (failure) {
        const Error& e = *failure;
        error = py::module_::import("winlayer.errors")
                    .attr("from_native")(error_kind_name(e.kind), e.code, e.message, e.operation, e.path,
                                         decode_utf8(e.entry), e.offset, e.expected, e.actual);
    }
    return py::make_tuple(calls, error);
}

// --- export from Python entries --------------------------------------------------------

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

py::bytes export_entries(const py::list& entries) {
    std::vector<MemoryLayerReader::Item> converted;
    for (const py::handle& h : entries) {
        MemoryLayerReader::Item& item = converted.emplace_back();
        item.entry = entry_from_dict(h.cast<py::dict>(), item.data);
    }
    StringSink sink;
    {
        py::gil_scoped_release nogil;
        MemoryLayerReader reader(std::move(converted));
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
        for (auto& [n, v] : eas) l.append(py::make_tuple(decode_utf8(n), py::bytes(v)));
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
        events.append(py::make_tuple("data", decode_utf8(stream_), declared_, size, py::bytes(data_)));
    }
    py::list events;

private:
    std::string stream_;
    py::object declared_;
    std::string data_;
};

py::list decode_backup_stream(const py::bytes& data, std::size_t chunk_size, std::uint64_t sparse_limit) {
    std::string s = data;
    EventHandler handler;
    BackupStreamDecoder decoder(handler);
    decoder.set_sparse_limit(sparse_limit);
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
        .def(py::init<py::object, bool, std::string, std::size_t, py::object, py::object>(), py::arg("source"),
             py::kw_only(), py::arg("allow_parent_links") = false, py::arg("expected_digest") = "",
             py::arg("batch_size") = 1024, py::arg("entry_type") = py::none(), py::arg("account_type") = py::none())
        .def("next_batch", &LayerTarLister::next_batch,
             "Up to batch_size entry tuples; [] at the end (the diffID is then known).")
        .def("close", &LayerTarLister::close, "Stops reading; next_batch() then raises ValueError.")
        .def_property_readonly("diff_id", &LayerTarLister::diff_id)
        .def_property_readonly("data_size", &LayerTarLister::data_size);

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
          py::arg("sparse_limit") = std::uint64_t(1) << 26,
          "The records of a backup stream as events, fed in chunks of chunk_size bytes; sparse "
          "streams may grow to sparse_limit bytes.");
    m.def("encode_extended_attributes", [](const ExtendedAttributes& eas) { return py::bytes(encode_extended_attributes(eas)); },
          py::arg("eas"));
    m.def("decode_extended_attributes", [](const py::bytes& data) {
              py::list l;
              for (auto& [n, v] : decode_extended_attributes(data)) l.append(py::make_tuple(decode_utf8(n), py::bytes(v)));
              return l;
          },
          py::arg("data"));
    m.def("encode_reparse_point", [](const std::string& target, bool mount_point) {
              return py::bytes(encode_reparse_point(target, mount_point));
          },
          py::arg("target"), py::arg("mount_point") = false);
    m.def("decode_reparse_point", [](const py::bytes& data) {
              ReparsePoint rp = decode_reparse_point(data);
              return py::make_tuple(decode_utf8(rp.target), rp.mount_point, rp.relative);
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
