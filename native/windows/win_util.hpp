// Win32 plumbing of the vmcompute backend: UTF-8 <-> UTF-16, `\\?\` long paths,
// owned handles and Win32 error helpers. Paths cross the backend seam as UTF-8 and
// become UTF-16 only here, at the Win32 boundary.
#pragma once

#include <windows.h>

#include <cstdint>
#include <string>

#include "core/error.hpp"
#include "core/layer.hpp"

namespace winlayer::win {

std::wstring widen(const std::string& utf8);
std::string narrow(const std::wstring& utf16);
std::string narrow(const wchar_t* utf16, std::size_t n);

// Absolute, backslash-separated form of `path` (GetFullPathNameW), no prefix.
std::wstring full_path(const std::string& path);
std::wstring full_path(const std::wstring& path);
// The `\\?\` (or `\\?\UNC\`) form of `path`, for every file operation we make
// ourselves: it lifts MAX_PATH and turns off name normalization.
std::wstring long_path(const std::string& path);
std::wstring long_path(const std::wstring& path);
// The form handed to HCS: absolute, and `\\?\`-prefixed only when it is too long to
// work without the prefix.
std::wstring hcs_path(const std::string& path);
// `base\rel`, with `rel`'s '/' turned into '\'.
std::wstring join(const std::wstring& base, const std::string& rel_utf8);

// throws Error::win32(GetLastError(), op, path)
[[noreturn]] void throw_last(const char* op, const std::wstring& path);
[[noreturn]] void throw_last(const char* op, const std::string& path = {});

class Handle {
public:
    Handle() = default;
    explicit Handle(HANDLE h) : h_(h == INVALID_HANDLE_VALUE ? nullptr : h) {}
    Handle(Handle&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
    Handle& operator=(Handle&& o) noexcept;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { reset(); }
    HANDLE get() const { return h_; }
    explicit operator bool() const { return h_ != nullptr; }
    void reset() noexcept;

private:
    HANDLE h_ = nullptr;
};

// Windows FILETIME ticks <-> FILE_BASIC_INFO, and setting/reading them by handle.
void set_basic_info(HANDLE h, const FileTimes& t, std::uint32_t attributes, const std::wstring& path);
FileTimes get_times(HANDLE h, const std::wstring& path, std::uint32_t* attributes = nullptr);

// File operations on long paths.
bool exists(const std::wstring& path, DWORD* attributes = nullptr);
void create_directory(const std::wstring& path);  // succeeds when it already is a directory
void create_directories(const std::wstring& path);
// Deletes a file or a whole tree (read-only attributes cleared, reparse points not followed).
void remove_tree(const std::wstring& path);
void remove_tree_noexcept(const std::wstring& path) noexcept;

// A random 32-bit number rendered in hex, for unique staging folder names.
std::string random_suffix();

}  // namespace winlayer::win
