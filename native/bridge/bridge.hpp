// Shared pieces of the pybind11 bridge (hcs_bridge.cpp and native/bridge/*.cpp):
// argument conversion and the per-area binders. No layer logic lives here.
#pragma once

#include <pybind11/pybind11.h>

#include <exception>
#include <memory>
#include <string>

#include "../core/layer.hpp"

namespace winlayer::bridge {

namespace py = pybind11;

// Raises the Python exception for the C++ exception currently being handled.
void register_error_translator();

// A Python exception object carried through native code, which may copy, rethrow and drop
// it without the GIL: the translator raises that same object again (each time it is
// rethrown, unlike py::error_already_set, which may be restored once).
class PythonException : public std::exception {
public:
    explicit PythonException(const py::handle& exc);  // with the GIL
    PyObject* object() const { return exc_.get(); }
    const char* what() const noexcept override { return "Python exception"; }

private:
    std::shared_ptr<PyObject> exc_;  // released with the GIL
};

// The exception being handled, for a queue that rethrows it at every read: a
// py::error_already_set becomes a PythonException (taking the GIL to do so).
std::exception_ptr rethrowable_current_exception();

// A native string (UTF-8 from a layer tar, not necessarily valid) as a str: bytes that are
// not UTF-8 are kept as surrogates (surrogateescape), so a hostile name never fails the
// conversion and encodes back to the same bytes.
py::str decode_utf8(const std::string& s);

// "directory", "file", "symlink", "alternate_stream", "hard_link" or "whiteout": the
// names Python sees (LayerTarEntry.type).
const char* entry_type_name(EntryType t);

// Per-area bindings, each in its own file of native/bridge/.
void bind_codec(py::module_& m);     // codec.cpp: layer tar inspection
void bind_listing_json(py::module_& m);  // listing_json.cpp: the JSON listing of a layer tar
void bind_backends(py::module_& m);  // backends.cpp: the Backend contract, both backends
void bind_tar(py::module_& m);       // tar.cpp: raw tar codec, digests, tar-split rebuild
void bind_pystream(py::module_& m);  // pystream.cpp: NativeStream (see pystream.hpp)

}  // namespace winlayer::bridge
