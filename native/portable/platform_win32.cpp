// Win32 implementation of platform.hpp (the HCS emulator's build). Paths are converted
// to UTF-16 with the \\?\ prefix so that long paths work; reparse points are opened as
// themselves (FILE_FLAG_OPEN_REPARSE_POINT), never followed. Errors are Error::win32.
#ifdef _WIN32

#include <windows.h>

#include <bcrypt.h>

#include <cstring>
#include <utility>

#include "../core/encoding.hpp"
#include "../core/error.hpp"
#include "platform.hpp"

namespace winlayer::portable {

namespace {

constexpr std::int64_t kEpochDiff = 116444736000000000;  // 1601 -> 1970 in 100 ns ticks

std::wstring wide(const std::string& utf8) {
    std::string bytes;
    if (!utf8_to_utf16le(utf8, bytes)) throw Error(ErrorKind::InvalidArgument, "path is not UTF-8").with_path(utf8);
    std::wstring out(bytes.size() / 2, L'\0');
    std::memcpy(&out[0], bytes.data(), bytes.size());
    return out;
}

std::wstring long_path(const std::string& path) {
    std::wstring w = wide(path);
    for (auto& c : w)
        if (c == L'/') c = L'\\';
    if (w.rfind(L"\\\\?\\", 0) == 0) return w;
    if (w.rfind(L"\\\\", 0) == 0) return L"\\\\?\\UNC\\" + w.substr(2);
    return L"\\\\?\\" + w;
}

HANDLE h_of(std::intptr_t h) { return reinterpret_cast<HANDLE>(h); }

[[noreturn]] void fail(const char* op, const std::string& path) { throw Error::win32(GetLastError(), op, path); }

std::int64_t ft_ns(const LARGE_INTEGER& t) { return (t.QuadPart - kEpochDiff) * 100; }
LARGE_INTEGER ns_ft(std::int64_t ns) {
    LARGE_INTEGER t;
    t.QuadPart = ns / 100 + kEpochDiff;
    return t;
}

HANDLE open_handle(const std::string& path, DWORD access, DWORD disposition, DWORD flags = 0) {
    return CreateFileW(long_path(path).c_str(), access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                       nullptr, disposition, flags | FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
                       nullptr);
}

NodeStat stat_handle(HANDLE h, const std::string& path) {
    FILE_BASIC_INFO basic;
    FILE_STANDARD_INFO standard;
    if (!GetFileInformationByHandleEx(h, FileBasicInfo, &basic, sizeof basic) ||
        !GetFileInformationByHandleEx(h, FileStandardInfo, &standard, sizeof standard))
        fail("GetFileInformationByHandleEx", path);
    NodeStat s;
    if (basic.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) s.kind = NodeKind::Symlink;
    else if (basic.FileAttributes & FILE_ATTRIBUTE_DIRECTORY) s.kind = NodeKind::Directory;
    else s.kind = NodeKind::File;
    s.size = s.kind == NodeKind::File ? static_cast<std::uint64_t>(standard.EndOfFile.QuadPart) : 0;
    s.atime_ns = ft_ns(basic.LastAccessTime);
    s.mtime_ns = ft_ns(basic.LastWriteTime);
    s.ctime_ns = ft_ns(basic.ChangeTime);
    s.links = standard.NumberOfLinks;
    return s;
}

void set_handle_times(HANDLE h, std::int64_t atime_ns, std::int64_t mtime_ns, const std::string& path) {
    FILE_BASIC_INFO basic{};
    basic.LastAccessTime = ns_ft(atime_ns);
    basic.LastWriteTime = ns_ft(mtime_ns);
    if (!SetFileInformationByHandle(h, FileBasicInfo, &basic, sizeof basic)) fail("SetFileInformationByHandle", path);
}

std::string narrow(const wchar_t* w) {
    std::string out;
    utf16le_to_utf8(reinterpret_cast<const std::uint8_t*>(w), wcslen(w) * 2, out);
    return out;
}

}  // namespace

// ---- File ---------------------------------------------------------------------------

File::~File() {
    if (handle_ != -1) CloseHandle(h_of(handle_));
}

File::File(File&& o) noexcept : handle_(o.handle_), path_(std::move(o.path_)) { o.handle_ = -1; }

File& File::operator=(File&& o) noexcept {
    if (this != &o) {
        if (handle_ != -1) CloseHandle(h_of(handle_));
        handle_ = o.handle_;
        path_ = std::move(o.path_);
        o.handle_ = -1;
    }
    return *this;
}

std::size_t File::read(std::uint8_t* buf, std::size_t n) {
    DWORD got = 0;
    DWORD want = n > (1u << 30) ? (1u << 30) : static_cast<DWORD>(n);
    if (!ReadFile(h_of(handle_), buf, want, &got, nullptr)) fail("ReadFile", path_);
    return got;
}

std::size_t File::read_at(std::uint64_t offset, std::uint8_t* buf, std::size_t n) {
    DWORD got = 0;
    DWORD want = n > (1u << 30) ? (1u << 30) : static_cast<DWORD>(n);
    OVERLAPPED at{};
    at.Offset = static_cast<DWORD>(offset);
    at.OffsetHigh = static_cast<DWORD>(offset >> 32);
    if (!ReadFile(h_of(handle_), buf, want, &got, &at)) {
        if (GetLastError() == ERROR_HANDLE_EOF) return 0;
        fail("ReadFile", path_);
    }
    return got;
}

void File::write(const std::uint8_t* data, std::size_t n) {
    while (n) {
        DWORD put = 0;
        DWORD chunk = n > (1u << 30) ? (1u << 30) : static_cast<DWORD>(n);
        if (!WriteFile(h_of(handle_), data, chunk, &put, nullptr)) fail("WriteFile", path_);
        data += put;
        n -= put;
    }
}

void File::write_at(std::uint64_t offset, const std::uint8_t* data, std::size_t n) {
    while (n) {
        DWORD put = 0;
        DWORD chunk = n > (1u << 30) ? (1u << 30) : static_cast<DWORD>(n);
        OVERLAPPED at{};
        at.Offset = static_cast<DWORD>(offset);
        at.OffsetHigh = static_cast<DWORD>(offset >> 32);
        if (!WriteFile(h_of(handle_), data, chunk, &put, &at)) fail("WriteFile", path_);
        data += put;
        n -= put;
        offset += put;
    }
}

void File::set_times(std::int64_t atime_ns, std::int64_t mtime_ns) {
    set_handle_times(h_of(handle_), atime_ns, mtime_ns, path_);
}

void File::start_writeback() noexcept {}

void File::sync() {
    if (!FlushFileBuffers(h_of(handle_))) fail("FlushFileBuffers", path_);
}

NodeStat File::stat() { return stat_handle(h_of(handle_), path_); }

void File::close() {
    if (handle_ == -1) return;
    HANDLE h = h_of(handle_);
    handle_ = -1;
    if (!CloseHandle(h)) fail("CloseHandle", path_);
}

// ---- Tree ---------------------------------------------------------------------------

Tree::Tree(std::string root) : root_(std::move(root)) {
    if (stat_path(root_).kind != NodeKind::Directory) throw Error::win32(ERROR_PATH_NOT_FOUND, "open", root_);
}

Tree::~Tree() = default;

std::string Tree::full(const std::string& rel) const { return rel.empty() ? root_ : root_ + "/" + rel; }

File Tree::create(const std::string& rel, bool /*owner_only: no POSIX modes*/) {
    std::string p = full(rel);
    HANDLE h = open_handle(p, GENERIC_READ | GENERIC_WRITE | FILE_WRITE_ATTRIBUTES, CREATE_NEW);
    if (h == INVALID_HANDLE_VALUE) fail("CreateFileW", p);
    return File(reinterpret_cast<std::intptr_t>(h), p);
}

File Tree::open_read(const std::string& rel) {
    std::string p = full(rel);
    HANDLE h = open_handle(p, GENERIC_READ, OPEN_EXISTING);
    if (h == INVALID_HANDLE_VALUE) fail("CreateFileW", p);
    return File(reinterpret_cast<std::intptr_t>(h), p);
}

bool Tree::make_dir(const std::string& rel) { return portable::make_dir(full(rel)); }

void Tree::make_dirs(const std::string& rel, std::size_t from) {
    // \\?\ paths take the whole length; each folder is made by its full path.
    for (std::size_t end = rel.find('/', from + 1); ; end = rel.find('/', end + 1)) {
        make_dir(rel.substr(0, end));
        if (end == std::string::npos) break;
    }
}

void Tree::hard_link(const std::string& existing_rel, const std::string& new_rel) {
    if (!CreateHardLinkW(long_path(full(new_rel)).c_str(), long_path(full(existing_rel)).c_str(), nullptr))
        fail("CreateHardLinkW", full(new_rel));
}

void Tree::remove(const std::string& rel) {
    std::string p = full(rel);
    if (stat(rel).kind == NodeKind::Directory) {
        if (!RemoveDirectoryW(long_path(p).c_str())) fail("RemoveDirectoryW", p);
    } else if (!DeleteFileW(long_path(p).c_str())) {
        fail("DeleteFileW", p);
    }
}

void Tree::remove_tree(const std::string& rel) { portable::remove_tree(full(rel)); }

NodeStat Tree::stat(const std::string& rel) { return stat_path(full(rel)); }

void Tree::set_times(const std::string& rel, std::int64_t atime_ns, std::int64_t mtime_ns) {
    std::string p = full(rel);
    HANDLE h = open_handle(p, FILE_WRITE_ATTRIBUTES, OPEN_EXISTING);
    if (h == INVALID_HANDLE_VALUE) fail("CreateFileW", p);
    try {
        set_handle_times(h, atime_ns, mtime_ns, p);
    } catch (...) {
        CloseHandle(h);
        throw;
    }
    CloseHandle(h);
}

std::vector<DirEntry> Tree::list(const std::string& rel) { return list_dir(full(rel)); }

void Tree::copy_in(const std::string& src, const std::string& rel) {
    std::string dst = full(rel);
    if (!CopyFileW(long_path(src).c_str(), long_path(dst).c_str(), TRUE)) fail("CopyFileW", dst);
}

void Tree::sync() {
    std::vector<std::string> stack{""};
    while (!stack.empty()) {
        std::string rel = stack.back();
        stack.pop_back();
        for (const auto& e : list(rel)) {
            std::string child = rel.empty() ? e.name : rel + "/" + e.name;
            if (e.kind == NodeKind::Directory) stack.push_back(child);
            else if (e.kind == NodeKind::File) {
                std::string p = full(child);
                HANDLE h = open_handle(p, GENERIC_WRITE, OPEN_EXISTING);
                if (h == INVALID_HANDLE_VALUE) fail("CreateFileW", p);
                BOOL ok = FlushFileBuffers(h);
                CloseHandle(h);
                if (!ok) fail("FlushFileBuffers", p);
            }
        }
    }
}

// ---- absolute paths -----------------------------------------------------------------

NodeStat stat_path(const std::string& path) {
    HANDLE h = open_handle(path, FILE_READ_ATTRIBUTES, OPEN_EXISTING);
    if (h == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();
        if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND) return NodeStat{};
        throw Error::win32(e, "CreateFileW", path);
    }
    try {
        NodeStat s = stat_handle(h, path);
        CloseHandle(h);
        return s;
    } catch (...) {
        CloseHandle(h);
        throw;
    }
}

std::string read_link(const std::string& path) {
    // Views made here are copies; a reparse point a user adds to one is not mapped.
    throw Error::invalid_layer("a symbolic link in a portable sandbox view is exported on POSIX systems only",
                               path, -1);
}

bool make_dir(const std::string& path) {
    if (CreateDirectoryW(long_path(path).c_str(), nullptr)) return true;
    DWORD e = GetLastError();
    if (e == ERROR_ALREADY_EXISTS && stat_path(path).kind == NodeKind::Directory) return false;
    throw Error::win32(e, "CreateDirectoryW", path);
}

void make_dirs(const std::string& path) {
    if (stat_path(path).kind == NodeKind::Directory) return;
    std::string parent = dir_name(path);
    if (!parent.empty() && parent != path && parent.size() > 3) make_dirs(parent);
    make_dir(path);
}

std::vector<DirEntry> list_dir(const std::string& path) {
    WIN32_FIND_DATAW fd;
    HANDLE h = FindFirstFileExW((long_path(path) + L"\\*").c_str(), FindExInfoBasic, &fd, FindExSearchNameMatch,
                                nullptr, 0);
    std::vector<DirEntry> out;
    if (h == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();
        if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND) return out;
        throw Error::win32(e, "FindFirstFileExW", path);
    }
    do {
        if (!wcscmp(fd.cFileName, L".") || !wcscmp(fd.cFileName, L"..")) continue;
        DirEntry d;
        d.name = narrow(fd.cFileName);
        if (fd.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) d.kind = NodeKind::Symlink;
        else if (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) d.kind = NodeKind::Directory;
        else d.kind = NodeKind::File;
        out.push_back(std::move(d));
    } while (FindNextFileW(h, &fd));
    DWORD e = GetLastError();
    FindClose(h);
    if (e != ERROR_NO_MORE_FILES) throw Error::win32(e, "FindNextFileW", path);
    return out;
}

void rename_noreplace(const std::string& from, const std::string& to) {
    if (!MoveFileExW(long_path(from).c_str(), long_path(to).c_str(), 0)) fail("MoveFileExW", to);
}

void remove_tree(const std::string& path) {
    NodeStat s = stat_path(path);
    if (s.kind == NodeKind::Missing) return;
    if (s.kind == NodeKind::Directory) {
        for (const auto& e : list_dir(path)) remove_tree(join(path, e.name));
        if (!RemoveDirectoryW(long_path(path).c_str()) && GetLastError() != ERROR_FILE_NOT_FOUND)
            fail("RemoveDirectoryW", path);
        return;
    }
    // A directory reparse point is removed as a directory, without touching its target.
    if (!DeleteFileW(long_path(path).c_str()) && !RemoveDirectoryW(long_path(path).c_str()) &&
        GetLastError() != ERROR_FILE_NOT_FOUND)
        fail("DeleteFileW", path);
}

std::optional<std::string> read_file_if_exists(const std::string& path) {
    HANDLE h = open_handle(path, GENERIC_READ, OPEN_EXISTING);
    if (h == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();
        if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND) return std::nullopt;
        throw Error::win32(e, "CreateFileW", path);
    }
    return File(reinterpret_cast<std::intptr_t>(h), path).read_rest();
}

void write_file_atomic(const std::string& path, const std::string& data) {
    std::string tmp = path + ".tmp-" + random_token();
    HANDLE h = open_handle(tmp, GENERIC_WRITE, CREATE_NEW);
    if (h == INVALID_HANDLE_VALUE) fail("CreateFileW", tmp);
    try {
        File f(reinterpret_cast<std::intptr_t>(h), tmp);
        f.write(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
        f.sync();
        f.close();
        if (!MoveFileExW(long_path(tmp).c_str(), long_path(path).c_str(),
                         MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH))
            fail("MoveFileExW", path);
    } catch (...) {
        DeleteFileW(long_path(tmp).c_str());
        throw;
    }
}

void sync_dir(const std::string&) {}  // NTFS journals directory changes; nothing to flush

bool is_absolute(const std::string& path) {
    return (path.size() >= 3 && path[1] == ':' && (path[2] == '\\' || path[2] == '/')) ||
           path.rfind("\\\\", 0) == 0;
}

std::string random_token() {
    std::uint64_t v = 0;
    if (BCryptGenRandom(nullptr, reinterpret_cast<PUCHAR>(&v), sizeof v, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
        throw Error(ErrorKind::Internal, "BCryptGenRandom failed");
    static const char* digits = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = digits[v & 15];
    return out;
}

std::int64_t now_ns() {
    FILETIME ft;
    GetSystemTimePreciseAsFileTime(&ft);
    LARGE_INTEGER t;
    t.LowPart = ft.dwLowDateTime;
    t.HighPart = static_cast<LONG>(ft.dwHighDateTime);
    return ft_ns(t);
}

// ---- FileLock -----------------------------------------------------------------------

namespace {
HANDLE open_lock(const std::string& path) {
    HANDLE h = CreateFileW(long_path(path).c_str(), GENERIC_READ | GENERIC_WRITE,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr, OPEN_ALWAYS, 0, nullptr);
    if (h == INVALID_HANDLE_VALUE) fail("CreateFileW", path);
    return h;
}
}  // namespace

FileLock FileLock::acquire(const std::string& path) {
    HANDLE h = open_lock(path);
    OVERLAPPED ov{};
    if (!LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, &ov)) {
        DWORD e = GetLastError();
        CloseHandle(h);
        throw Error::win32(e, "LockFileEx", path);
    }
    return FileLock(reinterpret_cast<std::intptr_t>(h));
}

std::optional<FileLock> FileLock::try_acquire(const std::string& path) {
    HANDLE h = open_lock(path);
    OVERLAPPED ov{};
    if (LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov))
        return FileLock(reinterpret_cast<std::intptr_t>(h));
    DWORD e = GetLastError();
    CloseHandle(h);
    if (e == ERROR_LOCK_VIOLATION || e == ERROR_IO_PENDING) return std::nullopt;
    throw Error::win32(e, "LockFileEx", path);
}

FileLock::~FileLock() {
    if (handle_ != -1) CloseHandle(h_of(handle_));
}

// ---- overlayfs: Linux only ------------------------------------------------------------

void mount_overlay(const std::vector<std::string>&, const std::string&, const std::string&, const std::string&) {
    throw Error(ErrorKind::BackendUnavailable, "overlayfs exists only on Linux; use WINLAYER_PORTABLE_MOUNT=copy");
}
void unmount(const std::string&) {}
bool is_mount_point(const std::string&) { return false; }
void make_whiteout(const std::string& path) { throw Error::win32(ERROR_NOT_SUPPORTED, "make whiteout", path); }
bool is_opaque_dir(const std::string&) { return false; }

}  // namespace winlayer::portable

#endif  // _WIN32
