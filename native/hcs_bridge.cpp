// winlayer._hcs: the one native module. It converts arguments, releases the GIL
// around native work and translates errors; the logic lives in native/core,
// native/portable and native/windows.
#include <pybind11/pybind11.h>

#include "bridge/bridge.hpp"
#include "core/error.hpp"

#ifndef WINLAYER_VERSION
#error "WINLAYER_VERSION must be defined by the build"
#endif

namespace py = pybind11;
using winlayer::Error;
using winlayer::ErrorKind;

namespace {

// Raises a native error of the given kind, to test the translation path end to end.
void raise_error(const std::string& kind, std::uint32_t code, const std::string& operation,
                 const std::string& path) {
    if (kind == "os") throw Error::os(static_cast<int>(code), operation, path);
    if (kind == "win32") throw Error::win32(code, operation, path);
    if (kind == "hresult") throw Error::hresult(code, operation, path);
    if (kind == "invalid_layer") throw Error::invalid_layer("bad entry", path, code);
    if (kind == "digest_mismatch") throw Error::digest_mismatch("sha256:aa", "sha256:bb");
    if (kind == "layer_not_found") throw Error(ErrorKind::LayerNotFound, "no such layer").with_path(path);
    if (kind == "backend_unavailable") throw Error(ErrorKind::BackendUnavailable, operation);
    if (kind == "std") throw std::logic_error("broken invariant");
    throw py::value_error("unknown error kind: " + kind);
}

}  // namespace

PYBIND11_MODULE(_hcs, m) {
    m.doc() = "winlayer native core: tar codec, layer backends and vmcompute bridge";
    m.attr("__version__") = WINLAYER_VERSION;
    winlayer::bridge::register_error_translator();
    winlayer::bridge::bind_codec(m);
    winlayer::bridge::bind_listing_json(m);
    winlayer::bridge::bind_backends(m);
    winlayer::bridge::bind_pystream(m);
    winlayer::bridge::bind_tar(m);

    m.def("_raise_error", &raise_error, py::arg("kind"), py::arg("code"), py::arg("operation"),
          py::arg("path"), "Raise a native error of `kind` (tests the error translation).");
}
