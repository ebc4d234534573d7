// C++ -> Python error translation. The mapping from error kinds to exception
// classes lives in python/winlayer/errors.py (from_native); this file only carries
// the fields across, so there is one place that decides what a failure means.
#include <filesystem>
#include <new>
#include <system_error>

#include "../core/error.hpp"
#include "bridge.hpp"

namespace winlayer::bridge {

namespace {

void raise_native(const char* kind, std::uint32_t code, const std::string& message,
                  const std::string& operation, const std::string& path,
                  const std::string& entry = {}, std::int64_t offset = -1,
                  const std::string& expected = {}, const std::string& actual = {}) {
    // Names from hostile tars need not be UTF-8: report them rather than fail to.
    py::object from_native = py::module_::import("winlayer.errors").attr("from_native");
    py::object exc = from_native(kind, code, decode_utf8(message), operation, decode_utf8(path),
                                 decode_utf8(entry), offset, expected, actual);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
}

}  // namespace

PythonException::PythonException(const py::handle& exc)
    : exc_(exc.inc_ref().ptr(), [](PyObject* o) {
          py::gil_scoped_acquire gil;
          Py_DECREF(o);
      }) {}

std::exception_ptr rethrowable_current_exception() {
    try {
        throw;
    } catch (const py::error_already_set& e) {
        py::gil_scoped_acquire gil;
        // Where it was raised stays visible: the object keeps the traceback fetched with it.
        if (e.trace()) PyException_SetTraceback(e.value().ptr(), e.trace().ptr());
        return std::make_exception_ptr(PythonException(e.value()));
    } catch (...) {
        return std::current_exception();
    }
}

py::str decode_utf8(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

void register_error_translator() {
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const py::builtin_exception&) {
            throw;  // pybind11's own (value_error, stop_iteration, ...): handled downstream
        } catch (const py::error_already_set&) {
            throw;
        } catch (const PythonException& e) {
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e.object())), e.object());
        } catch (const std::bad_alloc&) {
            throw;  // MemoryError
        } catch (const Error& e) {
            raise_native(error_kind_name(e.kind), e.code, e.message, e.operation, e.path, e.entry,
                         e.offset, e.expected, e.actual);
        } catch (const std::filesystem::filesystem_error& e) {
            raise_native("os", static_cast<std::uint32_t>(e.code().value()), e.code().message(),
                         "filesystem", e.path1().u8string());
        } catch (const std::system_error& e) {
            raise_native("os", static_cast<std::uint32_t>(e.code().value()), e.code().message(),
                         "system", "");
        } catch (const std::exception& e) {
            raise_native("internal", 0, e.what(), "", "");
        }
    });
}

}  // namespace winlayer::bridge
