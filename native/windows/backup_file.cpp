#include "backup_file.hpp"

#include "backup_api.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

namespace winlayer::win {

namespace {
constexpr std::size_t kBufferSize = std::size_t(1) << 20;
constexpr DWORD kMaxChunk = 1u << 30;  // one WriteFile/BackupWrite call at most
}  // namespace

Handle open_file(const std::wstring& path, DWORD access, DWORD disposition, DWORD share) {
    HANDLE h = CreateFileW(path.c_str(), access, share, nullptr, disposition,
                           FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT, nullptr);
    if (h == INVALID_HANDLE_VALUE) throw_last("CreateFileW", path);
    return Handle(h);
}

HandleSink::HandleSink(HANDLE h, std::wstring path)
    : h_(h), path_(std::move(path)), owned_(new std::uint8_t[kBufferSize]), buffer_(owned_.get()),
      capacity_(kBufferSize) {}

HandleSink::HandleSink(HANDLE h, std::wstring path, std::uint8_t* buffer, std::size_t capacity)
    : h_(h), path_(std::move(path)), buffer_(buffer), capacity_(capacity) {}

void HandleSink::write(const std::uint8_t* data, std::size_t n) {
    if (used_ + n <= capacity_) {
        std::memcpy(buffer_ + used_, data, n);
        used_ += n;
        return;
    }
    flush();
    if (n < capacity_) {
        std::memcpy(buffer_, data, n);
        used_ = n;
        return;
    }
    while (n) {
        DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(n, kMaxChunk));
        DWORD done = 0;
        if (!WriteFile(h_, data, chunk, &done, nullptr)) throw_last("WriteFile", path_);
        data += done;
        n -= done;
    }
}

void HandleSink::flush() {
    std::size_t off = 0;
    while (off < used_) {
        DWORD done = 0;
        if (!WriteFile(h_, buffer_ + off, static_cast<DWORD>(used_ - off), &done, nullptr))
            throw_last("WriteFile", path_);
        off += done;
    }
    used_ = 0;
}

BackupWriteSink::BackupWriteSink(HANDLE h, std::wstring path, bool security)
    : h_(h), path_(std::move(path)), security_(security) {}

BackupWriteSink::~BackupWriteSink() { end(true); }

void BackupWriteSink::write(const std::uint8_t* data, std::size_t n) {
    while (n) {
        DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(n, kMaxChunk));
        DWORD done = 0;
        if (!backup_api().BackupWrite(h_, const_cast<LPBYTE>(data), chunk, &done, FALSE, security_, &context_))
            throw_last("BackupWrite", path_);
        if (done == 0) throw Error::win32(ERROR_WRITE_FAULT, "BackupWrite", narrow(path_));
        data += done;
        n -= done;
    }
}

void BackupWriteSink::finish() {
    if (!context_) return;
    DWORD done = 0;
    LPVOID ctx = context_;
    context_ = nullptr;
    if (!backup_api().BackupWrite(h_, nullptr, 0, &done, TRUE, security_, &ctx)) throw_last("BackupWrite", path_);
}

void BackupWriteSink::end(bool abort) noexcept {
    if (!context_) return;
    DWORD done = 0;
    backup_api().BackupWrite(h_, nullptr, 0, &done, abort ? TRUE : FALSE, security_, &context_);
    context_ = nullptr;
}

BackupReadSource::BackupReadSource(Handle h, std::wstring path, bool security)
    : h_(std::move(h)), path_(std::move(path)), security_(security) {}

BackupReadSource::~BackupReadSource() {
    if (context_) {
        DWORD done = 0;
        backup_api().BackupRead(h_.get(), nullptr, 0, &done, TRUE, security_, &context_);
    }
}

std::size_t BackupReadSource::read(std::uint8_t* buf, std::size_t n) {
    DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(n, kMaxChunk));
    DWORD done = 0;
    if (!backup_api().BackupRead(h_.get(), buf, chunk, &done, FALSE, security_, &context_)) throw_last("BackupRead", path_);
    return done;
}

std::size_t HandleSource::read(std::uint8_t* buf, std::size_t n) {
    DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(n, kMaxChunk));
    DWORD done = 0;
    if (!ReadFile(h_.get(), buf, chunk, &done, nullptr)) throw_last("ReadFile", path_);
    return done;
}

}  // namespace winlayer::win
