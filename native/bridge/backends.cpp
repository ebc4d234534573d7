// The backend contract in Python: one Backend class bound over the C++ interface, for
// the portable and the vmcompute backend alike. Every call releases the GIL; an import
// takes it back only to pull from a Python stream or to report progress.
#include <pybind11/stl.h>

#include <memory>
#include <optional>

#include "../core/backend.hpp"
#include "../core/error.hpp"
#include "../core/layer_tar.hpp"
#include "../core/merged_layer.hpp"
#include "bridge.hpp"
#include "pystream.hpp"

namespace winlayer::bridge {

namespace {

struct ImportResult {
    std::string diff_id;
    std::uint64_t size = 0;
};

using BackendPtr = std::shared_ptr<Backend>;

// Runs `f` with the GIL released.
template <typename F>
auto nogil(F&& f) {
    py::gil_scoped_release release;
    return f();
}

ImportResult import_layer(const BackendPtr& backend, const DriverInfo& info, const std::string& id,
                          const LayerChain& parents, py::object source,
                          const std::optional<std::string>& expected_digest, py::object progress,
                          py::object wait_for_parents, py::object layer_files) {
    std::unique_ptr<Source> src = source_from_python(std::move(source));
    ImportOptions options;
    options.expected_digest = expected_digest.value_or("");
    if (!progress.is_none()) {
        // A borrowed pointer: `progress` outlives the call, and copying the callback
        // without the GIL must not touch a reference count.
        PyObject* callback = progress.ptr();
        options.progress = [callback](std::uint64_t done) {
            py::gil_scoped_acquire gil;
            py::handle fn(callback);
            fn(done);
        };
    }
    if (!wait_for_parents.is_none()) {
        PyObject* callback = wait_for_parents.ptr();  // borrowed, as `progress`
        options.wait_for_parents = [callback] {
            py::gil_scoped_acquire gil;
            py::handle fn(callback);
            fn();
        };
    }
    if (!layer_files.is_none()) {
        PyObject* callback = layer_files.ptr();  // borrowed, as `progress`
        options.layer_files = [callback](const CommitInfo& c) {
            py::gil_scoped_acquire gil;
            py::handle fn(callback);
            py::dict files = fn(c.diff_id, c.size);
            std::vector<std::pair<std::string, std::string>> out;
            for (auto [name, data] : files) out.emplace_back(name.cast<std::string>(), data.cast<py::bytes>());
            return out;
        };
    }
    CommitInfo commit = nogil([&] {
        std::unique_ptr<LayerWriter> writer = backend->import_writer(info, id, parents);
        return import_layer_tar(*src, *writer, options);
    });
    return ImportResult{commit.diff_id, commit.size};
}

py::object export_layer(const BackendPtr& backend, const DriverInfo& info, const std::string& id,
                        const LayerChain& parents, bool original) {
    // Open everything now, so that a missing or damaged layer fails here and not at the
    // first read; the tar is produced on the stream's own thread.
    std::function<void(Sink&)> producer;
    if (original) {
        auto [open_record, payloads] = nogil([&] {
            Backend::RecordOpener opener = backend->tar_split(info, id);  // first: it fails fastest
            return std::make_pair(std::move(opener),
                                  std::shared_ptr<PayloadStore>(backend->payloads(info, id, parents)));
        });
        producer = [backend, open_record = open_record, payloads = payloads](Sink& out) {
            rebuild_layer_tar(open_record, *payloads, out);
        };
    } else {
        std::shared_ptr<LayerReader> reader = nogil([&] { return backend->export_reader(info, id, parents); });
        producer = [backend, reader](Sink& out) { export_layer_tar(*reader, out); };
    }
    return make_native_stream(std::move(producer));
}

// One layer of a chain to merge: how the backend names it, and its own parents.
using ChainLayer = std::tuple<DriverInfo, std::string, LayerChain>;

// The merged file system of `layers` (nearest first) as one canonical layer tar. The
// layers' entries are read now, so that a missing or damaged layer fails here.
py::object export_merged(const BackendPtr& backend, std::vector<ChainLayer> layers) {
    auto chain = std::make_shared<const std::vector<ChainLayer>>(std::move(layers));
    std::shared_ptr<LayerReader> reader = nogil([&] {
        return std::shared_ptr<LayerReader>(merged_layer_reader(chain->size(), [backend, chain](std::size_t i) {
            const auto& [info, id, parents] = (*chain)[i];
            return backend->export_reader(info, id, parents);
        }));
    });
    return make_native_stream([backend, reader](Sink& out) { export_layer_tar(*reader, out); });
}

const char* change_kind(EntryType t) {
    switch (t) {
    case EntryType::Directory: return "dir";
    case EntryType::File: return "file";
    case EntryType::Symlink: return "symlink";
    case EntryType::AlternateStream: return "stream";
    case EntryType::HardLink: return "link";
    case EntryType::Whiteout: return "whiteout";
    }
    return "file";
}

// The layer's entries as (path, kind, size), straight from the backend's LayerReader in
// export order: no tar is written or parsed, no data read.
py::list layer_changes(const BackendPtr& backend, const DriverInfo& info, const std::string& id,
                       const LayerChain& parents) {
    std::vector<LayerEntry> entries = nogil([&] {
        std::unique_ptr<LayerReader> reader = backend->export_reader(info, id, parents);
        std::vector<LayerEntry> out;
        LayerEntry e;
        while (reader->next(e)) {
            LayerEntry& kept = out.emplace_back();
            kept.path = std::move(e.path);
            kept.type = e.type;
            kept.size = e.type == EntryType::File || e.type == EntryType::AlternateStream ? e.size : 0;
        }
        return out;
    });
    py::list changes(entries.size());
    std::size_t i = 0;
    for (const LayerEntry& e : entries) changes[i++] = py::make_tuple(decode_utf8(e.path), change_kind(e.type), e.size);
    return changes;
}

BackendPtr hcs_backend() {
#ifdef _WIN32
    return BackendPtr(make_vmcompute_backend());
#else
    throw Error(ErrorKind::BackendUnavailable,
                "the 'hcs' backend needs Windows with the Containers feature (vmcompute.dll); on this "
                "platform use the portable backend (winlayer._hcs.portable_backend, or unset "
                "WINLAYER_BACKEND / set WINLAYER_BACKEND=portable)");
#endif
}

}  // namespace

void bind_backends(py::module_& m) {
    py::class_<DriverInfo>(m, "DriverInfo", "HCS's DriverInfo: the flavour (0 diff, 1 filter) and the home folder.")
        .def(py::init([](int flavour, std::string home) {
                 if (flavour != 0 && flavour != 1)
                     throw Error(ErrorKind::InvalidArgument, "flavour must be 0 (diff) or 1 (filter)");
                 return DriverInfo{static_cast<Flavour>(flavour), std::move(home)};
             }),
             py::arg("flavour"), py::arg("home"))
        .def_property_readonly("flavour", [](const DriverInfo& i) { return static_cast<int>(i.flavour); })
        .def_readonly("home", &DriverInfo::home)
        .def("__repr__", [](const DriverInfo& i) {
            return "DriverInfo(flavour=" + std::to_string(static_cast<int>(i.flavour)) + ", home=" +
                   py::repr(py::str(i.home)).cast<std::string>() + ")";
        });

    py::class_<ImportResult>(m, "ImportResult", "What import_layer learned: the diffID and the bytes of file data.")
        .def_readonly("diff_id", &ImportResult::diff_id)
        .def_readonly("size", &ImportResult::size)
        .def("__repr__", [](const ImportResult& r) {
            return "ImportResult(diff_id='" + r.diff_id + "', size=" + std::to_string(r.size) + ")";
        });

    using I = const DriverInfo&;
    using S = const std::string&;
    py::class_<Backend, BackendPtr>(m, "Backend", "HCS's layer API (the same names on every backend).")
        .def_property_readonly("name", &Backend::name)
        .def("activate_layer", [](Backend& b, I info, S id) { nogil([&] { b.activate_layer(info, id); }); },
             py::arg("info"), py::arg("id"))
        .def("deactivate_layer", [](Backend& b, I info, S id) { nogil([&] { b.deactivate_layer(info, id); }); },
             py::arg("info"), py::arg("id"))
        .def("create_layer",
             [](Backend& b, I info, S id, S parent_id) { nogil([&] { b.create_layer(info, id, parent_id); }); },
             py::arg("info"), py::arg("id"), py::arg("parent_id"))
        .def("create_sandbox_layer",
             [](Backend& b, I info, S id, S parent_id, const LayerChain& parents) {
                 nogil([&] { b.create_sandbox_layer(info, id, parent_id, parents); });
             },
             py::arg("info"), py::arg("id"), py::arg("parent_id"), py::arg("parents"))
        .def("create_view_layer",
             [](Backend& b, I info, S id, S parent_id, const LayerChain& parents) {
                 nogil([&] { b.create_view_layer(info, id, parent_id, parents); });
             },
             py::arg("info"), py::arg("id"), py::arg("parent_id"), py::arg("parents"),
             "A sandbox for reading `parents`: read-only where the backend can make it so (the portable "
             "overlay view), else a plain sandbox whose changes the caller discards.")
        .def("expand_sandbox_size",
             [](Backend& b, I info, S id, std::uint64_t size) { nogil([&] { b.expand_sandbox_size(info, id, size); }); },
             py::arg("info"), py::arg("id"), py::arg("size"))
        .def("destroy_layer", [](Backend& b, I info, S id) { nogil([&] { b.destroy_layer(info, id); }); },
             py::arg("info"), py::arg("id"))
        .def("layer_exists", [](Backend& b, I info, S id) { return nogil([&] { return b.layer_exists(info, id); }); },
             py::arg("info"), py::arg("id"))
        .def("get_layer_mount_path",
             [](Backend& b, I info, S id) { return nogil([&] { return b.get_layer_mount_path(info, id); }); },
             py::arg("info"), py::arg("id"))
        .def("prepare_layer",
             [](Backend& b, I info, S id, const LayerChain& parents) { nogil([&] { b.prepare_layer(info, id, parents); }); },
             py::arg("info"), py::arg("id"), py::arg("parents"))
        .def("unprepare_layer", [](Backend& b, I info, S id) { nogil([&] { b.unprepare_layer(info, id); }); },
             py::arg("info"), py::arg("id"))
        .def("name_to_guid", [](Backend& b, S name) { return nogil([&] { return b.name_to_guid(name); }); },
             py::arg("name"))
        .def("get_base_images", [](Backend& b) { return nogil([&] { return b.get_base_images(); }); })
        .def("process_base_image", [](Backend& b, S path) { nogil([&] { b.process_base_image(path); }); },
             py::arg("path"))
        .def("process_utility_image", [](Backend& b, S path) { nogil([&] { b.process_utility_image(path); }); },
             py::arg("path"))
        .def("grant_vm_access", [](Backend& b, S vm_id, S path) { nogil([&] { b.grant_vm_access(vm_id, path); }); },
             py::arg("vm_id"), py::arg("path"))
        .def("import_layer", &import_layer, py::arg("info"), py::arg("id"), py::arg("parents"), py::arg("source"),
             py::arg("expected_digest") = py::none(), py::arg("progress") = py::none(),
             py::arg("wait_for_parents") = py::none(), py::arg("layer_files") = py::none(),
             "Import an uncompressed layer tar (a path or a binary file object) as layer `id`. "
             "`wait_for_parents`, for parents still being imported, is called before the first "
             "entry that reads them and before commit; it blocks until they are committed, or "
             "raises to abort. `layer_files(diff_id, size)`, called before the commit, gives "
             "the caller's files ({name: bytes}) that a backend with `publishes_layer_files` "
             "publishes in the layer's folder with the layer (others ignore them).")
        .def_property_readonly("publishes_layer_files", &Backend::publishes_layer_files,
                               "Whether import_layer's `layer_files` are published with the layer.")
        .def("export_layer", &export_layer, py::arg("info"), py::arg("id"), py::arg("parents"),
             py::arg("original") = false,
             "The layer as a tar stream: canonical, or the imported tar byte for byte (original=True).")
        .def("export_merged", &export_merged, py::arg("layers"),
             "The merged file system of a chain of layers, each (info, id, parents), nearest first, as one "
             "canonical layer tar stream without whiteouts (see native/core/merged_layer.hpp).")
        .def("layer_changes", &layer_changes, py::arg("info"), py::arg("id"), py::arg("parents"),
             "The layer's entries in export order as (path, kind, size): kind is dir, file, symlink, "
             "stream (an alternate data stream, path 'file:name'), link (a hard link) or whiteout (path "
             "is what the layer deletes); size is the data bytes of a file or stream, else 0.")
        .def("sweep", [](Backend& b, I info) { return nogil([&] { return b.sweep(info); }); }, py::arg("info"),
             "Remove what crashed operations left in the home; returns the names removed.");

    m.def("portable_backend", [](std::string base_images) { return BackendPtr(make_portable_backend(std::move(base_images))); },
          py::arg("base_images"), "The portable backend; `base_images` is the folder get_base_images lists.");
    m.def("hcs_backend", &hcs_backend, "The vmcompute backend (Windows with the Containers feature).");
}

}  // namespace winlayer::bridge
