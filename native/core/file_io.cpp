#include "file_io.hpp"

#include <cerrno>
#include <cstring>
#include <utility>

#include "error.hpp"

#ifdef _WIN32
#include <windows.h>
#else
#include <fcntl.h>
#include <unistd.h>
#endif

namespace winlayer {

namespace {

#ifdef _WIN32

constexpr std::intptr_t kClosed = -1;

// UTF-8 -> UTF-16 with the \\?\ prefix for absolute drive paths (lifting MAX_PATH) and
// \\?\UNC\ for UNC paths; relative paths are made absolute first, since the prefix
// disables Win32 path normalization.
std::wstring long_path(const std::string& path) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path.data(),
                                static_cast<int>(path.size()), nullptr, 0);
    if (n <= 0 && !path.empty()) throw Error::win32(ERROR_NO_UNICODE_TRANSLATION, "open", path);
    std::wstring wide(static_cast<std::size_t>(n), L'\0');
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path.data(), static_cast<int>(path.size()),
                        wide.data(), n);
    if (wide.rfind(L"\\\\?\\", 0) == 0) return wide;
    DWORD full_len = GetFullPathNameW(wide.c_str(), 0, nullptr, nullptr);
    if (full_len == 0) throw Error::win32(GetLastError(), "open", path);
    std::wstring full(full_len, L'\0');
    full_len = GetFullPathNameW(wide.c_str(), full_len, full.data(), nullptr);
    full.resize(full_len);
    if (full.rfind(L"\\\\", 0) == 0) return L"\\\\?\\UNC\\" + full.substr(2);
    return L"\\\\?\\" + full;
}

std::intptr_t open_file(const std::string& path, bool write, FileMode mode) {
    HANDLE h = CreateFileW(long_path(path).c_str(), write ? GENERIC_WRITE : GENERIC_READ,
                           write ? 0 : FILE_SHARE_READ | FILE_SHARE_DELETE, nullptr,
                           write ? (mode == FileMode::CreateNew ? CREATE_NEW : CREATE_ALWAYS)
                                 : OPEN_EXISTING,
                           FILE_ATTRIBUTE_NORMAL | FILE_FLAG_SEQUENTIAL_SCAN, nullptr);
    if (h == INVALID_HANDLE_VALUE) throw Error::win32(GetLastError(), "open", path);
    return reinterpret_cast<std::intptr_t>(h);
}

std::size_t read_some(std::intptr_t handle, std::uint8_t* buf, std::size_t n,
                      const std::string& path) {
    DWORD got = 0;
    DWORD want = n > 0x40000000 ? 0x40000000 : static_cast<DWORD>(n);
    if (!ReadFile(reinterpret_cast<HANDLE>(handle), buf, want, &got, nullptr))
        throw Error::win32(GetLastError(), "read", path);
    return got;
}

std::size_t write_some(std::intptr_t handle, const std::uint8_t* data, std::size_t n,
                       const std::string& path) {
    DWORD put = 0;
    DWORD want = n > 0x40000000 ? 0x40000000 : static_cast<DWORD>(n);
    if (!WriteFile(reinterpret_cast<HANDLE>(handle), data, want, &put, nullptr))
        throw Error::win32(GetLastError(), "write", path);
    return put;
}

void sync_file(std::intptr_t handle, const std::string& path) {
    if (!FlushFileBuffers(reinterpret_cast<HANDLE>(handle)))
        throw Error::win32(GetLastError(), "fsync", path);
}

void seek_file(std::intptr_t handle, std::uint64_t offset, const std::string& path) {
    LARGE_INTEGER to;
    to.QuadPart = static_cast<LONGLONG>(offset);
    if (!SetFilePointerEx(reinterpret_cast<HANDLE>(handle), to, nullptr, FILE_BEGIN))
        throw Error::win32(GetLastError(), "seek", path);
}

bool close_file(std::intptr_t handle) { return CloseHandle(reinterpret_cast<HANDLE>(handle)) != 0; }

[[noreturn]] void throw_close_error(const std::string& path) {
    throw Error::win32(GetLastError(), "close", path);
}

#else

constexpr std::intptr_t kClosed = -1;

std::intptr_t open_file(const std::string& path, bool write, FileMode mode) {
    int flags = O_CLOEXEC;
    if (write)
        flags |= O_WRONLY | O_CREAT | (mode == FileMode::CreateNew ? O_EXCL : O_TRUNC);
    else
        flags |= O_RDONLY;
    int fd;
    do {
        fd = ::open(path.c_str(), flags, 0666);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) throw Error::last_os("open", path);
#if defined(POSIX_FADV_SEQUENTIAL)
    if (!write) (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    return fd;
}

std::size_t read_some(std::intptr_t fd, std::uint8_t* buf, std::size_t n, const std::string& path) {
    for (;;) {
        ssize_t got = ::read(static_cast<int>(fd), buf, n > 0x40000000 ? 0x40000000 : n);
        if (got >= 0) return static_cast<std::size_t>(got);
        if (errno != EINTR) throw Error::last_os("read", path);
    }
}

std::size_t write_some(std::intptr_t fd, const std::uint8_t* data, std::size_t n,
                       const std::string& path) {
    for (;;) {
        ssize_t put = ::write(static_cast<int>(fd), data, n > 0x40000000 ? 0x40000000 : n);
        if (put >= 0) return static_cast<std::size_t>(put);
        if (errno != EINTR) throw Error::last_os("write", path);
    }
}

void sync_file(std::intptr_t fd, const std::string& path) {
    if (::fsync(static_cast<int>(fd)) != 0) throw Error::last_os("fsync", path);
}

void seek_file(std::intptr_t fd, std::uint64_t offset, const std::string& path) {
    if (::lseek(static_cast<int>(fd), static_cast<off_t>(offset), SEEK_SET) < 0)
        throw Error::last_os("seek", path);
}

bool close_file(std::intptr_t fd) { return ::close(static_cast<int>(fd)) == 0 || errno == EINTR; }

[[noreturn]] void throw_close_error(const std::string& path) { throw Error::last_os("close", path); }

#endif

}  // namespace

FileSource::FileSource(std::string path, std::size_t buffer_size)
    : path_(std::move(path)),
      handle_(open_file(path_, false, FileMode::Truncate)),
      buffer_(make_io_buffer(buffer_size)),
      capacity_(buffer_size > 0 ? buffer_size : 1) {}

FileSource::FileSource(std::string path, std::uint64_t offset, std::uint64_t length, std::size_t buffer_size)
    : FileSource(std::move(path), buffer_size) {
    try {
        seek_file(handle_, offset, path_);
    } catch (...) {
        close_file(handle_);
        throw;
    }
    left_ = length_ = length;
}

FileSource::~FileSource() { close_file(handle_); }

std::size_t FileSource::read_raw(std::uint8_t* buf, std::size_t n) {
    if (left_ < n) n = static_cast<std::size_t>(left_);
    if (n == 0) return 0;
    const std::size_t got = read_some(handle_, buf, n, path_);
    if (left_ == kToTheEnd) return got;
    if (got == 0)  // the archive was cut short (or shrunk) since its members were listed
        throw Error::invalid_layer(
            "the file " + path_ + " ends " + std::to_string(left_) + " bytes before the end of the layer", "",
            static_cast<std::int64_t>(length_ - left_));
    left_ -= got;
    return got;
}

std::size_t FileSource::read(std::uint8_t* buf, std::size_t n) {
    if (n == 0) return 0;
    if (pos_ == end_) {
        // Large requests skip the buffer (one copy less); small ones are what it is for.
        if (n >= capacity_ / 4) return read_raw(buf, n);
        pos_ = 0;
        end_ = read_raw(buffer_.get(), capacity_);
        if (end_ == 0) return 0;
    }
    std::size_t take = end_ - pos_ < n ? end_ - pos_ : n;
    std::memcpy(buf, buffer_.get() + pos_, take);
    pos_ += take;
    return take;
}

FileSink::FileSink(std::string path, FileMode mode, std::size_t buffer_size)
    : path_(std::move(path)),
      handle_(open_file(path_, true, mode)),
      buffer_(new std::uint8_t[buffer_size > 0 ? buffer_size : 1]),
      capacity_(buffer_size > 0 ? buffer_size : 1) {}

FileSink::~FileSink() {
    if (handle_ != kClosed) close_file(handle_);
}

void FileSink::write_raw(const std::uint8_t* data, std::size_t n) {
    if (handle_ == kClosed) throw Error::os(EBADF, "write", path_);
    while (n > 0) {
        std::size_t put = write_some(handle_, data, n, path_);
        data += put;
        n -= put;
    }
}

void FileSink::write(const std::uint8_t* data, std::size_t n) {
    written_ += n;
    if (used_ + n <= capacity_) {
        std::memcpy(buffer_.get() + used_, data, n);
        used_ += n;
        return;
    }
    flush();
    if (n >= capacity_) {
        write_raw(data, n);
    } else {
        std::memcpy(buffer_.get(), data, n);
        used_ = n;
    }
}

void FileSink::flush() {
    if (used_ == 0) return;
    std::size_t n = used_;
    used_ = 0;  // a failed write is not retried: the error is final for this sink
    write_raw(buffer_.get(), n);
}

void FileSink::sync() {
    flush();
    if (handle_ == kClosed) throw Error::os(EBADF, "fsync", path_);
    sync_file(handle_, path_);
}

void FileSink::close() {
    if (handle_ == kClosed) return;
    try {
        flush();
    } catch (...) {
        close_file(handle_);
        handle_ = kClosed;
        throw;
    }
    std::intptr_t h = handle_;
    handle_ = kClosed;
    if (!close_file(h)) throw_close_error(path_);
}

}  // namespace winlayer
