// Files as Source / Sink, by path. POSIX file descriptors, or Win32 handles under
// _WIN32 (UTF-8 paths converted to UTF-16 with the \\?\ prefix, so paths longer than
// 260 characters work). Reads and writes go through a large buffer; large requests
// bypass it. Errors are Error::os / Error::win32 naming the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "io.hpp"

namespace winlayer {

constexpr std::size_t kFileBufferSize = std::size_t(1) << 20;

class FileSource : public Source {
public:
    explicit FileSource(std::string path, std::size_t buffer_size = kFileBufferSize);
    // `length` bytes from `offset` (a member of an archive, read in place); a file that
    // ends sooner is an error.
    FileSource(std::string path, std::uint64_t offset, std::uint64_t length,
               std::size_t buffer_size = kFileBufferSize);
    ~FileSource() override;
    FileSource(const FileSource&) = delete;
    FileSource& operator=(const FileSource&) = delete;

    std::size_t read(std::uint8_t* buf, std::size_t n) override;
    const std::string& path() const { return path_; }

private:
    std::size_t read_raw(std::uint8_t* buf, std::size_t n);

    std::string path_;
    std::intptr_t handle_;  // fd, or HANDLE on Windows
    IoBuffer buffer_;
    std::size_t capacity_;
    std::size_t pos_ = 0;
    std::size_t end_ = 0;
    static constexpr std::uint64_t kToTheEnd = ~std::uint64_t(0);
    std::uint64_t left_ = kToTheEnd;  // bytes the section still has
    std::uint64_t length_ = kToTheEnd;
};

enum class FileMode {
    Truncate,   // create or truncate
    CreateNew,  // fail (EEXIST / ERROR_FILE_EXISTS) if the file exists
};

class FileSink : public Sink {
public:
    explicit FileSink(std::string path, FileMode mode = FileMode::Truncate,
                      std::size_t buffer_size = kFileBufferSize);
    // Closes without reporting errors: call close() to know that the data was written.
    ~FileSink() override;
    FileSink(const FileSink&) = delete;
    FileSink& operator=(const FileSink&) = delete;

    void write(const std::uint8_t* data, std::size_t n) override;
    // Writes the buffer out to the operating system.
    void flush();
    // flush() and then fsync / FlushFileBuffers: the data is on disk when it returns.
    void sync();
    // flush() and close the file; later writes throw. Idempotent.
    void close();
    const std::string& path() const { return path_; }
    std::uint64_t bytes_written() const { return written_; }

private:
    void write_raw(const std::uint8_t* data, std::size_t n);

    std::string path_;
    std::intptr_t handle_;
    std::unique_ptr<std::uint8_t[]> buffer_;
    std::size_t capacity_;
    std::size_t used_ = 0;
    std::uint64_t written_ = 0;
};

}  // namespace winlayer
