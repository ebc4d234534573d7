// Byte streams over Win32 file handles for the layer writer and reader: a buffered
// WriteFile sink (staging files), a BackupWrite sink and a BackupRead source. BackupWrite
// and BackupRead exist only on real Windows (Wine answers ERROR_NOT_SUPPORTED).
#pragma once

#include <windows.h>

#include <memory>
#include <string>

#include "core/io.hpp"
#include "win_util.hpp"

namespace winlayer::win {

// CreateFileW with FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT (directories
// open too, links are not followed). Throws Error::win32 naming the path.
Handle open_file(const std::wstring& path, DWORD access, DWORD disposition, DWORD share = FILE_SHARE_READ);

// Writes through a buffer with WriteFile: its own, or one the caller lends it (an
// import writes many small files; one buffer serves them all).
class HandleSink : public Sink {
public:
    HandleSink(HANDLE h, std::wstring path);
    HandleSink(HANDLE h, std::wstring path, std::uint8_t* buffer, std::size_t capacity);
    void write(const std::uint8_t* data, std::size_t n) override;
    void flush();

private:
    HANDLE h_;
    std::wstring path_;
    std::unique_ptr<std::uint8_t[]> owned_;
    std::uint8_t* buffer_;
    std::size_t capacity_;
    std::size_t used_ = 0;
};

// Feeds a backup stream to BackupWrite. `security`: restore the SECURITY record (needs
// WRITE_DAC | WRITE_OWNER | ACCESS_SYSTEM_SECURITY on the handle). finish() completes
// the restore; without it the destructor aborts it.
class BackupWriteSink : public Sink {
public:
    BackupWriteSink(HANDLE h, std::wstring path, bool security);
    ~BackupWriteSink() override;
    BackupWriteSink(const BackupWriteSink&) = delete;
    BackupWriteSink& operator=(const BackupWriteSink&) = delete;
    void write(const std::uint8_t* data, std::size_t n) override;
    void finish();

private:
    void end(bool abort) noexcept;
    HANDLE h_;
    std::wstring path_;
    bool security_;
    LPVOID context_ = nullptr;
};

// Reads the backup stream of an open handle with BackupRead.
class BackupReadSource : public Source {
public:
    BackupReadSource(Handle h, std::wstring path, bool security);
    ~BackupReadSource() override;
    BackupReadSource(const BackupReadSource&) = delete;
    BackupReadSource& operator=(const BackupReadSource&) = delete;
    std::size_t read(std::uint8_t* buf, std::size_t n) override;

private:
    Handle h_;
    std::wstring path_;
    bool security_;
    LPVOID context_ = nullptr;
};

// Reads a plain file through its handle (ReadFile).
class HandleSource : public Source {
public:
    HandleSource(Handle h, std::wstring path) : h_(std::move(h)), path_(std::move(path)) {}
    std::size_t read(std::uint8_t* buf, std::size_t n) override;

private:
    Handle h_;
    std::wstring path_;
};

}  // namespace winlayer::win
