// The one error type of the native code. Every failure that reaches Python is a
// winlayer::Error; hcs_bridge.cpp translates it to an OSError subclass or a
// winlayer.errors exception (python/winlayer/errors.py owns that mapping).
#pragma once

#include <cstdint>
#include <exception>
#include <string>

namespace winlayer {

enum class ErrorKind {
    Os,                  // code = errno
    Win32,               // code = Win32 error code (GetLastError, folded HRESULT)
    Hresult,             // code = HRESULT that is not FACILITY_WIN32 (e.g. 0x8037xxxx)
    InvalidLayer,        // malformed or hostile layer data: entry + byte offset
    DigestMismatch,      // expected / actual digests
    LayerNotFound,       // path = layer id or folder
    LayerExists,         // path = layer id or folder
    LayerInUse,          // path = layer id or folder
    StoreCorrupt,        // damaged or unknown on-disk metadata
    BackendUnavailable,  // the backend cannot run here; message says how to fix it
    InvalidArgument,     // a caller passed a bad value
    Internal,            // a broken invariant inside winlayer
};

const char* error_kind_name(ErrorKind kind) noexcept;

class Error : public std::exception {
public:
    Error(ErrorKind kind, std::string message);

    // errno-based failure of `operation` on `path`.
    static Error os(int errno_code, std::string operation, std::string path = {});
    // errno from the last failed call (captured immediately).
    static Error last_os(std::string operation, std::string path = {});
    static Error win32(std::uint32_t code, std::string operation, std::string path = {});
    static Error hresult(std::uint32_t hr, std::string operation, std::string path = {});
    static Error invalid_layer(std::string message, std::string entry, std::int64_t offset);
    static Error digest_mismatch(std::string expected, std::string actual);

    const char* what() const noexcept override { return what_.c_str(); }

    ErrorKind kind;
    std::uint32_t code = 0;   // errno, Win32 code or HRESULT, by kind
    std::string message;      // what went wrong, without the location
    std::string operation;    // e.g. "open", "ImportLayer"
    std::string path;         // file, folder or layer id concerned
    std::string entry;        // tar entry name (InvalidLayer)
    std::int64_t offset = -1; // byte offset in the tar stream (InvalidLayer)
    std::string expected;     // DigestMismatch
    std::string actual;       // DigestMismatch

    Error& with_path(std::string p) &;
    Error&& with_path(std::string p) &&;
    // Fills in the tar entry and byte offset where they are not known yet (a caller that
    // knows where the failure happened adds it on the way out).
    Error& at_entry(const std::string& entry_name, std::int64_t byte_offset) &;

private:
    void render();
    std::string what_;
};

}  // namespace winlayer
