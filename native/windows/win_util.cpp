#include "win_util.hpp"

#include <cstdio>
#include <random>
#include <vector>

namespace winlayer::win {

std::wstring widen(const std::string& s) {
    if (s.empty()) return {};
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(), static_cast<int>(s.size()),
                                nullptr, 0);
    if (n <= 0) throw Error(ErrorKind::InvalidArgument, "not valid UTF-8: " + s);
    std::wstring w(static_cast<std::size_t>(n), L'\0');
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(), static_cast<int>(s.size()), w.data(), n);
    return w;
}

std::string narrow(const wchar_t* w, std::size_t len) {
    if (len == 0) return {};
    // Unpaired surrogates (legal in NTFS names) become U+FFFD rather than failing.
    int n = WideCharToMultiByte(CP_UTF8, 0, w, static_cast<int>(len), nullptr, 0, nullptr, nullptr);
    if (n <= 0) throw_last("WideCharToMultiByte");
    std::string s(static_cast<std::size_t>(n), '\0');
    WideCharToMultiByte(CP_UTF8, 0, w, static_cast<int>(len), s.data(), n, nullptr, nullptr);
    return s;
}

std::string narrow(const std::wstring& w) { return narrow(w.data(), w.size()); }

static bool has_prefix(const std::wstring& s, const wchar_t* p) { return s.rfind(p, 0) == 0; }

std::wstring full_path(const std::wstring& path) {
    if (path.empty()) throw Error(ErrorKind::InvalidArgument, "empty path");
    if (has_prefix(path, L"\\\\?\\")) return path;
    DWORD n = GetFullPathNameW(path.c_str(), 0, nullptr, nullptr);
    if (n == 0) throw_last("GetFullPathNameW", path);
    std::wstring out(n, L'\0');
    n = GetFullPathNameW(path.c_str(), n, out.data(), nullptr);
    if (n == 0) throw_last("GetFullPathNameW", path);
    out.resize(n);
    return out;
}

std::wstring full_path(const std::string& path) { return full_path(widen(path)); }

std::wstring long_path(const std::wstring& path) {
    std::wstring full = full_path(path);
    if (has_prefix(full, L"\\\\?\\")) return full;
    if (has_prefix(full, L"\\\\")) return L"\\\\?\\UNC\\" + full.substr(2);
    return L"\\\\?\\" + full;
}

std::wstring long_path(const std::string& path) { return long_path(widen(path)); }

std::wstring hcs_path(const std::string& path) {
    std::wstring full = full_path(path);
    // 248 = MAX_PATH minus room for an 8.3 name: the limit of CreateDirectoryW.
    return full.size() < 248 ? full : long_path(full);
}

std::wstring join(const std::wstring& base, const std::string& rel) {
    std::wstring r = widen(rel);
    for (auto& c : r)
        if (c == L'/') c = L'\\';
    if (r.empty()) return base;
    if (!base.empty() && base.back() == L'\\') return base + r;
    return base + L'\\' + r;
}

void throw_last(const char* op, const std::wstring& path) {
    DWORD code = GetLastError();
    throw Error::win32(code, op, narrow(path));
}

void throw_last(const char* op, const std::string& path) {
    DWORD code = GetLastError();
    throw Error::win32(code, op, path);
}

Handle& Handle::operator=(Handle&& o) noexcept {
    if (this != &o) {
        reset();
        h_ = o.h_;
        o.h_ = nullptr;
    }
    return *this;
}

void Handle::reset() noexcept {
    if (h_) CloseHandle(h_);
    h_ = nullptr;
}

static LARGE_INTEGER ticks(std::int64_t v) {
    LARGE_INTEGER l;
    l.QuadPart = v;
    return l;
}

void set_basic_info(HANDLE h, const FileTimes& t, std::uint32_t attributes, const std::wstring& path) {
    FILE_BASIC_INFO bi{};
    bi.CreationTime = ticks(t.creation);
    bi.LastAccessTime = ticks(t.last_access);
    bi.LastWriteTime = ticks(t.last_write);
    bi.ChangeTime = ticks(t.change);
    bi.FileAttributes = attributes;  // 0 keeps the current attributes
    if (!SetFileInformationByHandle(h, FileBasicInfo, &bi, sizeof bi))
        throw_last("SetFileInformationByHandle", path);
}

FileTimes get_times(HANDLE h, const std::wstring& path, std::uint32_t* attributes) {
    FILE_BASIC_INFO bi{};
    if (!GetFileInformationByHandleEx(h, FileBasicInfo, &bi, sizeof bi))
        throw_last("GetFileInformationByHandleEx", path);
    if (attributes) *attributes = bi.FileAttributes;
    FileTimes t;
    t.creation = bi.CreationTime.QuadPart;
    t.last_access = bi.LastAccessTime.QuadPart;
    t.last_write = bi.LastWriteTime.QuadPart;
    t.change = bi.ChangeTime.QuadPart;
    return t;
}

bool exists(const std::wstring& path, DWORD* attributes) {
    DWORD a = GetFileAttributesW(path.c_str());
    if (a == INVALID_FILE_ATTRIBUTES) {
        DWORD e = GetLastError();
        if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND) return false;
        throw_last("GetFileAttributesW", path);
    }
    if (attributes) *attributes = a;
    return true;
}

void create_directory(const std::wstring& path) {
    if (CreateDirectoryW(path.c_str(), nullptr)) return;
    DWORD e = GetLastError();
    DWORD a = 0;
    if (e == ERROR_ALREADY_EXISTS && exists(path, &a) && (a & FILE_ATTRIBUTE_DIRECTORY)) return;
    SetLastError(e);
    throw_last("CreateDirectoryW", path);
}

void create_directories(const std::wstring& path) {
    DWORD a = 0;
    if (exists(path, &a)) {
        if (a & FILE_ATTRIBUTE_DIRECTORY) return;
        SetLastError(ERROR_ALREADY_EXISTS);
        throw_last("CreateDirectoryW", path);
    }
    auto slash = path.find_last_of(L'\\');
    // Stop at the volume root (`\\?\C:\`): it always exists.
    if (slash != std::wstring::npos && slash > 7) create_directories(path.substr(0, slash));
    create_directory(path);
}

void remove_tree(const std::wstring& path) {
    DWORD a = 0;
    if (!exists(path, &a)) return;
    if (a & FILE_ATTRIBUTE_READONLY) SetFileAttributesW(path.c_str(), a & ~FILE_ATTRIBUTE_READONLY);
    if (!(a & FILE_ATTRIBUTE_DIRECTORY)) {
        if (!DeleteFileW(path.c_str())) throw_last("DeleteFileW", path);
        return;
    }
    if (!(a & FILE_ATTRIBUTE_REPARSE_POINT)) {  // a junction or directory symlink: remove the link only
        WIN32_FIND_DATAW fd;
        HANDLE f = FindFirstFileExW((path + L"\\*").c_str(), FindExInfoBasic, &fd, FindExSearchNameMatch,
                                    nullptr, 0);
        if (f == INVALID_HANDLE_VALUE) throw_last("FindFirstFileExW", path);
        std::vector<std::wstring> children;
        do {
            std::wstring n = fd.cFileName;
            if (n != L"." && n != L"..") children.push_back(path + L"\\" + n);
        } while (FindNextFileW(f, &fd));
        FindClose(f);
        for (const auto& c : children) remove_tree(c);
    }
    if (!RemoveDirectoryW(path.c_str())) throw_last("RemoveDirectoryW", path);
}

void remove_tree_noexcept(const std::wstring& path) noexcept {
    try {
        remove_tree(path);
    } catch (...) {
        // Best effort on a failure path; the original error is what the caller reports.
    }
}

std::string random_suffix() {
    static thread_local std::mt19937 gen{std::random_device{}()};
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(gen()));
    return buf;
}

}  // namespace winlayer::win
