#include "error.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace winlayer {

const char* error_kind_name(ErrorKind kind) noexcept {
    switch (kind) {
    case ErrorKind::Os: return "os";
    case ErrorKind::Win32: return "win32";
    case ErrorKind::Hresult: return "hresult";
    case ErrorKind::InvalidLayer: return "invalid_layer";
    case ErrorKind::DigestMismatch: return "digest_mismatch";
    case ErrorKind::LayerNotFound: return "layer_not_found";
    case ErrorKind::LayerExists: return "layer_exists";
    case ErrorKind::LayerInUse: return "layer_in_use";
    case ErrorKind::StoreCorrupt: return "store_corrupt";
    case ErrorKind::BackendUnavailable: return "backend_unavailable";
    case ErrorKind::InvalidArgument: return "invalid_argument";
    case ErrorKind::Internal: return "internal";
    }
    return "internal";
}

Error::Error(ErrorKind k, std::string msg) : kind(k), message(std::move(msg)) { render(); }

Error Error::os(int errno_code, std::string op, std::string p) {
    Error e(ErrorKind::Os, std::strerror(errno_code));
    e.code = static_cast<std::uint32_t>(errno_code);
    e.operation = std::move(op);
    e.path = std::move(p);
    e.render();
    return e;
}

Error Error::last_os(std::string op, std::string p) {
    int saved = errno;
    return os(saved, std::move(op), std::move(p));
}

Error Error::win32(std::uint32_t c, std::string op, std::string p) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "Win32 error %u", static_cast<unsigned>(c));
    Error e(ErrorKind::Win32, buf);
    e.code = c;
    e.operation = std::move(op);
    e.path = std::move(p);
    e.render();
    return e;
}

Error Error::hresult(std::uint32_t hr, std::string op, std::string p) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "HRESULT 0x%08X", static_cast<unsigned>(hr));
    Error e(ErrorKind::Hresult, buf);
    e.code = hr;
    e.operation = std::move(op);
    e.path = std::move(p);
    e.render();
    return e;
}

Error Error::invalid_layer(std::string msg, std::string ent, std::int64_t off) {
    Error e(ErrorKind::InvalidLayer, std::move(msg));
    e.entry = std::move(ent);
    e.offset = off;
    e.render();
    return e;
}

Error Error::digest_mismatch(std::string exp, std::string act) {
    Error e(ErrorKind::DigestMismatch, "layer digest mismatch");
    e.expected = std::move(exp);
    e.actual = std::move(act);
    e.render();
    return e;
}

Error& Error::with_path(std::string p) & {
    path = std::move(p);
    render();
    return *this;
}

Error&& Error::with_path(std::string p) && {
    path = std::move(p);
    render();
    return std::move(*this);
}

Error& Error::at_entry(const std::string& entry_name, std::int64_t byte_offset) & {
    if (entry.empty()) entry = entry_name;
    if (offset < 0) offset = byte_offset;
    render();
    return *this;
}

void Error::render() {
    what_.clear();
    if (!operation.empty()) what_ += operation + ": ";
    what_ += message;
    if (!entry.empty()) what_ += " (entry '" + entry + "'";
    if (offset >= 0) what_ += (entry.empty() ? " (" : ", ") + std::string("offset ") + std::to_string(offset);
    if (!entry.empty() || offset >= 0) what_ += ")";
    if (!expected.empty()) what_ += ": expected " + expected + ", got " + actual;
    if (!path.empty()) what_ += ": '" + path + "'";
}

}  // namespace winlayer
