// Low-level bindings of the generic tar codec (native/core/tar*, sha256): raw headers,
// digests, a deterministic writer and tar-split rebuilds, for tests and tools. The
// Windows view of a layer tar is bound in codec.cpp.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/file_io.hpp"
#include "../core/layer_tar.hpp"
#include "../core/memory_io.hpp"
#include "../core/sha256.hpp"
#include "../core/tar.hpp"
#include "../core/tar_split.hpp"
#include "bridge.hpp"
#include "pystream.hpp"

namespace winlayer::bridge {

namespace {

std::string encode_name(const py::handle& h) {
    if (py::isinstance<py::bytes>(h)) return h.cast<std::string>();
    PyObject* o = PyUnicode_AsEncodedString(py::str(h).ptr(), "utf-8", "surrogateescape");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::bytes>(o).cast<std::string>();
}

py::tuple time_tuple(const TarTime& t) { return py::make_tuple(t.sec, t.nsec); }

TarTime parse_time(const py::handle& h, const char* what) {
    if (py::isinstance<py::int_>(h)) return TarTime{h.cast<std::int64_t>(), 0};
    if (py::isinstance<py::tuple>(h) && py::len(h) == 2) {
        auto t = h.cast<std::pair<std::int64_t, std::int64_t>>();
        if (t.second < 0 || t.second > 999999999)
            throw py::value_error(std::string(what) + " nanoseconds must be in 0..999999999");
        return TarTime{t.first, static_cast<std::uint32_t>(t.second)};
    }
    throw py::type_error(std::string(what) + " must be an int or a (seconds, nanoseconds) tuple");
}

py::list pax_list(const std::vector<PaxRecord>& records) {
    py::list out;
    for (const auto& r : records) out.append(py::make_tuple(py::bytes(r.key), py::bytes(r.value)));
    return out;
}

struct Entry {
    TarHeader header;
    std::optional<std::string> data;
};

struct Scan {
    std::vector<Entry> read;  // filled without the GIL, then moved into `entries`
    py::list entries;
    std::string diff_id;
    std::uint64_t size = 0;
    std::vector<PaxRecord> global_pax;
    std::optional<std::string> tar_split;
};

Scan read_tar(py::object source, bool payloads, bool record_split) {
    std::unique_ptr<Source> src = source_from_python(std::move(source));
    Scan scan;
    {
        py::gil_scoped_release nogil;
        TarSplitWriter split;
        TarReader reader(*src, record_split ? &split : nullptr);
        Entry e;
        while (reader.next(e.header)) {
            if (payloads && e.header.type == tar_type::kFile) {
                std::string data;
                data.reserve(static_cast<std::size_t>(e.header.size));
                const std::uint8_t* view;
                while (std::size_t n = reader.read_view(view))
                    data.append(reinterpret_cast<const char*>(view), n);
                e.data = std::move(data);
            }
            scan.read.push_back(std::move(e));
            e = Entry();
        }
        scan.diff_id = reader.diff_id();
        scan.size = reader.offset();
        scan.global_pax = reader.global_records();
        if (record_split) scan.tar_split = split.take();
    }
    src.reset();
    for (auto& e : scan.read) scan.entries.append(py::cast(std::move(e)));
    scan.read = {};
    return scan;
}

std::string tar_digest(py::object source) {
    std::unique_ptr<Source> src = source_from_python(std::move(source));
    py::gil_scoped_release nogil;
    TarReader reader(*src);
    TarHeader h;
    while (reader.next(h)) {
    }
    return reader.diff_id();
}

// A TarReader over a Python source, iterated from Python: next() and read() run without
// the GIL.
class PyTarReader {
public:
    PyTarReader(py::object source, bool record_split)
        : source_(source_from_python(std::move(source))),
          split_(record_split ? std::make_unique<TarSplitWriter>() : nullptr),
          reader_(std::make_unique<TarReader>(*source_, split_.get())) {}

    ~PyTarReader() {
        // The reader refers to the source: destroy it first.
        reader_.reset();
        source_.reset();
    }

    Entry next() {
        Entry e;
        bool more;
        {
            py::gil_scoped_release nogil;
            more = reader_->next(e.header);
        }
        if (!more) {
            done_ = true;
            throw py::stop_iteration();
        }
        return e;
    }

    py::bytes read(py::ssize_t size) {
        std::string out;
        {
            py::gil_scoped_release nogil;
            std::uint64_t want = reader_->remaining();
            if (size >= 0) want = std::min<std::uint64_t>(want, static_cast<std::uint64_t>(size));
            out.resize(static_cast<std::size_t>(want));
            auto* p = reinterpret_cast<std::uint8_t*>(&out[0]);
            for (std::size_t got = 0; got < out.size();) got += reader_->read(p + got, out.size() - got);
        }
        return py::bytes(out);
    }

    void skip() {
        py::gil_scoped_release nogil;
        reader_->skip();
    }

    std::string diff_id() const {
        if (!done_) throw py::value_error("the diff ID is known once every entry has been read");
        return reader_->diff_id();
    }

    py::object tar_split() {
        if (!split_) return py::none();
        if (!done_) throw py::value_error("the tar-split record is complete once every entry has been read");
        if (!record_) record_ = split_->take();
        return py::bytes(*record_);
    }

    std::uint64_t offset() const { return reader_->offset(); }
    std::uint64_t remaining() const { return reader_->remaining(); }
    py::list global_pax() const { return pax_list(reader_->global_records()); }

private:
    std::unique_ptr<Source> source_;
    std::unique_ptr<TarSplitWriter> split_;
    std::unique_ptr<TarReader> reader_;
    std::optional<std::string> record_;
    bool done_ = false;
};

// TarWriter into a file (by path) or into memory.
class PyTarWriter {
public:
    explicit PyTarWriter(const py::object& path) {
        if (path.is_none()) {
            memory_ = std::make_unique<StringSink>();
            writer_ = std::make_unique<TarWriter>(*memory_);
        } else {
            file_ = std::make_unique<FileSink>(path_from_python(path));
            writer_ = std::make_unique<TarWriter>(*file_);
        }
    }

    void add(const py::object& name, const std::string& type, std::uint64_t size, std::uint32_t mode,
             const py::object& linkname, const py::object& mtime, const py::object& atime,
             const py::object& ctime, const py::list& pax) {
        if (type.size() != 1) throw py::value_error("type must be one character, e.g. '0' or '5'");
        TarHeader h;
        h.name = encode_name(name);
        h.type = type[0];
        h.size = size;
        h.mode = mode;
        h.linkname = encode_name(linkname);
        h.mtime = parse_time(mtime, "mtime");
        if (!atime.is_none()) h.atime = parse_time(atime, "atime");
        if (!ctime.is_none()) h.ctime = parse_time(ctime, "ctime");
        for (const auto& item : pax) {
            auto kv = item.cast<py::tuple>();
            if (kv.size() != 2) throw py::value_error("pax items are (key, value) pairs");
            h.pax.push_back(PaxRecord{encode_name(kv[0]), encode_name(kv[1])});
        }
        writer_->add(h);
    }

    void write(const py::buffer& data) {
        py::buffer_info info = data.request();
        const auto* p = static_cast<const std::uint8_t*>(info.ptr);
        const auto n = static_cast<std::size_t>(info.size * info.itemsize);
        py::gil_scoped_release nogil;
        writer_->write(p, n);
    }

    py::object finish() {
        writer_->finish();
        if (file_) {
            file_->close();
            return py::none();
        }
        return py::bytes(memory_->out);
    }

    std::uint64_t bytes_written() const { return writer_->bytes_written(); }

    py::bytes getvalue() const {
        if (!memory_) throw py::value_error("getvalue() is for a writer into memory");
        return py::bytes(memory_->out);
    }

private:
    std::unique_ptr<StringSink> memory_;
    std::unique_ptr<FileSink> file_;
    std::unique_ptr<TarWriter> writer_;
};

// Payloads from a Python callable (name, size) -> path, binary file object or bytes.
class PythonPayloadStore : public PayloadStore {
public:
    explicit PythonPayloadStore(py::object open) : open_(std::move(open)) {}
    ~PythonPayloadStore() override {
        py::gil_scoped_acquire gil;
        open_ = py::object();
    }

    std::unique_ptr<Source> open(const std::string& name, std::uint64_t size) override {
        py::gil_scoped_acquire gil;
        py::object r = open_(decode_utf8(name), size);
        if (py::isinstance<py::bytes>(r) || py::isinstance<py::bytearray>(r))
            r = py::module_::import("io").attr("BytesIO")(r);
        return source_from_python(r);
    }

private:
    py::object open_;
};

py::object tar_split_rebuild(const py::bytes& record, py::object open_payload) {
    auto store = std::make_shared<PythonPayloadStore>(std::move(open_payload));
    std::string split = record;
    inspect_tar_split(split);  // a damaged record fails here, not on the first read()
    return make_native_stream([split = std::move(split), store](Sink& out) {
        rebuild_layer_tar(split, *store, out);
    });
}

py::tuple tar_split_info(const py::bytes& record) {
    TarSplitSummary s = inspect_tar_split(record);
    py::list payloads;
    for (const auto& p : s.payloads)
        payloads.append(py::make_tuple(p.entry_index, decode_utf8(p.name), p.size));
    return py::make_tuple(s.total_size, s.digest, payloads);
}

// A producer of `size` bytes (byte i = i % 251) that fails after `fail_after` bytes when
// that is not negative: exercises NativeStream without a layer.
py::object test_stream(std::uint64_t size, std::int64_t fail_after, std::size_t buffer_size) {
    return make_native_stream(
        [size, fail_after](Sink& out) {
            std::vector<std::uint8_t> chunk(64 * 1024);
            for (std::uint64_t at = 0; at < size;) {
                if (fail_after >= 0 && at >= static_cast<std::uint64_t>(fail_after))
                    throw Error::invalid_layer("test failure", "producer", static_cast<std::int64_t>(at));
                std::uint64_t end = size;
                if (fail_after >= 0) end = std::min<std::uint64_t>(end, static_cast<std::uint64_t>(fail_after));
                const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), end - at));
                for (std::size_t i = 0; i < n; ++i) chunk[i] = static_cast<std::uint8_t>((at + i) % 251);
                out.write(chunk.data(), n);
                at += n;
            }
        },
        buffer_size);
}

}  // namespace

void bind_tar(py::module_& m) {
    py::class_<Entry>(m, "TarEntry", "One tar entry as the reader saw it (raw header view).")
        .def_property_readonly("name", [](const Entry& e) { return decode_utf8(e.header.name); })
        .def_property_readonly("linkname", [](const Entry& e) { return decode_utf8(e.header.linkname); })
        .def_property_readonly("type", [](const Entry& e) { return std::string(1, e.header.type); })
        .def_property_readonly("size", [](const Entry& e) { return e.header.size; })
        .def_property_readonly("mode", [](const Entry& e) { return e.header.mode; })
        .def_property_readonly("uid", [](const Entry& e) { return e.header.uid; })
        .def_property_readonly("gid", [](const Entry& e) { return e.header.gid; })
        .def_property_readonly("uname", [](const Entry& e) { return decode_utf8(e.header.uname); })
        .def_property_readonly("gname", [](const Entry& e) { return decode_utf8(e.header.gname); })
        .def_property_readonly("mtime", [](const Entry& e) { return time_tuple(e.header.mtime); })
        .def_property_readonly("atime", [](const Entry& e) -> py::object {
            return e.header.atime ? py::object(time_tuple(*e.header.atime)) : py::object(py::none());
        })
        .def_property_readonly("ctime", [](const Entry& e) -> py::object {
            return e.header.ctime ? py::object(time_tuple(*e.header.ctime)) : py::object(py::none());
        })
        .def_property_readonly("pax", [](const Entry& e) { return pax_list(e.header.pax); })
        .def_property_readonly("offset", [](const Entry& e) { return e.header.offset; })
        .def_property_readonly("header_offset", [](const Entry& e) { return e.header.header_offset; })
        .def_property_readonly("data_offset", [](const Entry& e) { return e.header.data_offset; })
        .def_property_readonly("data", [](const Entry& e) -> py::object {
            return e.data ? py::object(py::bytes(*e.data)) : py::object(py::none());
        })
        .def("__repr__", [](const Entry& e) {
            return "<TarEntry " + std::string(py::repr(decode_utf8(e.header.name))) + " type '" +
                   std::string(1, e.header.type) + "' size " + std::to_string(e.header.size) + ">";
        });

    py::class_<Scan>(m, "TarScan", "The result of read_tar.")
        .def_readonly("entries", &Scan::entries)  // one list, converted once
        .def_readonly("diff_id", &Scan::diff_id)
        .def_readonly("size", &Scan::size)
        .def_property_readonly("global_pax", [](const Scan& s) { return pax_list(s.global_pax); })
        .def_property_readonly("tar_split", [](const Scan& s) -> py::object {
            return s.tar_split ? py::object(py::bytes(*s.tar_split)) : py::object(py::none());
        });

    m.def("read_tar", &read_tar, py::arg("source"), py::kw_only(), py::arg("payloads") = false,
          py::arg("tar_split") = false,
          "Read every header of a tar (path or binary file object), optionally with payloads "
          "and the tar-split record. Raises InvalidLayer for malformed input.");
    m.def("tar_digest", &tar_digest, py::arg("source"),
          "Validate a tar's structure and return the sha256 of all its bytes ('sha256:<hex>').");
    m.def("sha256_hex", [](const py::buffer& data, bool portable) {
        py::buffer_info info = data.request();
        Sha256 h(portable);
        {
            py::gil_scoped_release nogil;
            h.update(info.ptr, static_cast<std::size_t>(info.size * info.itemsize));
        }
        return hex(h.digest());
    }, py::arg("data"), py::arg("portable") = false, "SHA-256 of `data` as hex.");
    m.def("sha256_accelerated", &Sha256::hardware_accelerated,
          "Whether SHA-256 uses the CPU's SHA instructions.");

    py::class_<PyTarWriter>(m, "TarWriter", "Deterministic PAX tar writer, into a file or memory.")
        .def(py::init<const py::object&>(), py::arg("path") = py::none())
        .def("add", &PyTarWriter::add, py::arg("name"), py::arg("type") = "0", py::kw_only(),
             py::arg("size") = 0, py::arg("mode") = 0644, py::arg("linkname") = "",
             py::arg("mtime") = 0, py::arg("atime") = py::none(), py::arg("ctime") = py::none(),
             py::arg("pax") = py::list(),
             "Write an entry's headers; a regular file's `size` bytes follow through write().")
        .def("write", &PyTarWriter::write, py::arg("data"))
        .def("finish", &PyTarWriter::finish,
             "End the archive; returns its bytes when writing to memory, else None.")
        .def("getvalue", &PyTarWriter::getvalue, "The bytes written so far (memory writer).")
        .def_property_readonly("bytes_written", &PyTarWriter::bytes_written);

    py::class_<PyTarReader>(m, "TarReader",
                            "Streaming tar reader: iterate for entries, read() their payload.")
        .def(py::init<py::object, bool>(), py::arg("source"), py::kw_only(), py::arg("tar_split") = false)
        .def("__iter__", [](py::object self) { return self; })
        .def("__next__", &PyTarReader::next)
        .def("read", &PyTarReader::read, py::arg("size") = -1,
             "Read up to `size` bytes of the current entry's payload (all of it if negative).")
        .def("skip", &PyTarReader::skip, "Skip the rest of the current payload.")
        .def_property_readonly("offset", &PyTarReader::offset)
        .def_property_readonly("remaining", &PyTarReader::remaining)
        .def_property_readonly("global_pax", &PyTarReader::global_pax)
        .def_property_readonly("diff_id", &PyTarReader::diff_id)
        .def_property_readonly("tar_split", &PyTarReader::tar_split);

    m.def("tar_split_rebuild", &tar_split_rebuild, py::arg("tar_split"), py::arg("open_payload"),
          "Stream the original tar rebuilt from its tar-split record; open_payload(name, size) "
          "returns each payload as a path, binary file object or bytes.");
    m.def("tar_split_info", &tar_split_info, py::arg("tar_split"),
          "(total_size, digest, [(entry_index, name, size), ...]) of a tar-split record.");
    m.def("_test_stream", &test_stream, py::arg("size"), py::arg("fail_after") = -1,
          py::arg("buffer_size") = kNativeStreamBuffer,
          "A NativeStream of `size` pattern bytes, failing after `fail_after` (tests).");
}

}  // namespace winlayer::bridge
