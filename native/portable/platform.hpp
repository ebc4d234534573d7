// The portable backend's file operations, the only place that calls the operating
// system: POSIX in platform_posix.cpp, Win32 in platform_win32.cpp (the HCS emulator
// that the Wine tests load is built from this backend with mingw-w64). Paths are UTF-8;
// a relative path inside a Tree is '/'-separated and already validated (no "..", no
// empty component). Nothing here follows a symbolic link: the layer trees this backend
// writes never contain one (symlink entries are kept as metadata plus a placeholder), so
// a relative path cannot leave its tree. Errors are winlayer::Error naming the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace winlayer::portable {

enum class NodeKind : std::uint8_t { Missing, File, Directory, Symlink, Whiteout, Other };

struct NodeStat {
    NodeKind kind = NodeKind::Missing;
    std::uint64_t size = 0;
    std::int64_t atime_ns = 0;  // Unix epoch, nanoseconds
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;  // inode change time (POSIX), ChangeTime (Windows)
    std::uint32_t links = 1;
};

struct DirEntry {
    std::string name;
    NodeKind kind = NodeKind::Other;
};

// An open file. Movable; closing errors are reported by close(), the destructor ignores them.
class File {
public:
    File() = default;
    File(std::intptr_t handle, std::string path) : handle_(handle), path_(std::move(path)) {}
    ~File();
    File(File&& o) noexcept;
    File& operator=(File&& o) noexcept;
    File(const File&) = delete;
    File& operator=(const File&) = delete;

    bool is_open() const { return handle_ != -1; }
    std::intptr_t native_handle() const { return handle_; }
    const std::string& path() const { return path_; }
    std::size_t read(std::uint8_t* buf, std::size_t n);  // 0 at end of file
    std::string read_rest();  // from where read() is to the end
    std::size_t read_at(std::uint64_t offset, std::uint8_t* buf, std::size_t n);  // likewise
    void write(const std::uint8_t* data, std::size_t n);  // all of it, or throws
    // Writes all of it at `offset` (where write() goes next is then unspecified).
    void write_at(std::uint64_t offset, const std::uint8_t* data, std::size_t n);
    void set_times(std::int64_t atime_ns, std::int64_t mtime_ns);
    void sync();
    // Asks the kernel to start writing the file's data now, without waiting (Linux:
    // sync_file_range; elsewhere nothing): a later sync of many files then has less left.
    void start_writeback() noexcept;
    NodeStat stat();
    void close();

private:
    std::intptr_t handle_ = -1;
    std::string path_;
};

// A folder whose contents are reached by relative paths, never through a symbolic link.
class Tree {
public:
    explicit Tree(std::string root);  // the folder must exist
    ~Tree();
    Tree(const Tree&) = delete;
    Tree& operator=(const Tree&) = delete;

    const std::string& root() const { return root_; }
    std::string full(const std::string& rel) const;

    // A new file, read-write; fails if anything is there. owner_only: mode 0600 (POSIX;
    // else 0644), for a caller's records.
    File create(const std::string& rel, bool owner_only = false);
    File open_read(const std::string& rel);
    bool make_dir(const std::string& rel);  // false if a directory is already there
    // Makes every folder of `rel` past its first `from` bytes (rel[0, from) is a folder of
    // the tree, "" its root; rel[from] is a '/' unless from is 0), one below the other:
    // the work grows with the length of `rel`, not with its square.
    void make_dirs(const std::string& rel, std::size_t from);
    void hard_link(const std::string& existing_rel, const std::string& new_rel);
    void remove(const std::string& rel);  // a file or an empty directory
    void remove_tree(const std::string& rel);  // anything, recursively; absent is fine
    NodeStat stat(const std::string& rel);     // kind Missing when absent
    void set_times(const std::string& rel, std::int64_t atime_ns, std::int64_t mtime_ns);
    std::vector<DirEntry> list(const std::string& rel);
    // Copies `src` (an absolute path) to a new file `rel`, sharing extents (reflink) where the
    // filesystem can, and keeps its modification time.
    void copy_in(const std::string& src, const std::string& rel);
    // Everything written under the tree is on disk when this returns (syncfs on Linux,
    // a flush of every file and folder elsewhere).
    void sync();

private:
    std::string root_;
    std::intptr_t handle_ = -1;  // directory fd (POSIX); unused on Windows
};

// Absolute-path operations.
NodeStat stat_path(const std::string& path);  // does not follow a final symlink
std::string read_link(const std::string& path);  // a symlink's target, as stored
bool make_dir(const std::string& path);       // false if it already is a directory
void make_dirs(const std::string& path);
std::vector<DirEntry> list_dir(const std::string& path);  // empty if `path` is missing
// Renames; fails with EEXIST/ENOTEMPTY (Error::os) when `to` exists.
void rename_noreplace(const std::string& from, const std::string& to);
void remove_tree(const std::string& path);  // absent is fine
std::string read_file(const std::string& path);
std::optional<std::string> read_file_if_exists(const std::string& path);
// Writes `data` to a temporary file beside `path`, syncs it and renames it over `path`.
void write_file_atomic(const std::string& path, const std::string& data);
void sync_dir(const std::string& path);
std::string join(const std::string& a, const std::string& b);
std::string base_name(const std::string& path);
std::string dir_name(const std::string& path);
bool is_absolute(const std::string& path);
std::string random_token();  // 16 hex digits from the OS random source
std::int64_t now_ns();

// An exclusive advisory lock on a file, held until destruction. Held by another open
// file (in this or another process) means busy; the lock dies with its holder.
class FileLock {
public:
    static FileLock acquire(const std::string& path);                // waits
    static std::optional<FileLock> try_acquire(const std::string& path);  // nullopt if busy
    ~FileLock();
    FileLock(FileLock&& o) noexcept : handle_(o.handle_) { o.handle_ = -1; }
    FileLock& operator=(FileLock&&) = delete;
    FileLock(const FileLock&) = delete;

private:
    explicit FileLock(std::intptr_t h) : handle_(h) {}
    std::intptr_t handle_ = -1;
};

// overlayfs (Linux only). mount_overlay throws Error(Os) when the kernel refuses (e.g. no
// privilege); BackendUnavailable where overlayfs does not exist.
// An empty `upper` mounts the lower folders alone, read-only (`work` is then unused).
void mount_overlay(const std::vector<std::string>& lower, const std::string& upper,
                   const std::string& work, const std::string& target);
void unmount(const std::string& target);  // not mounted is fine
bool is_mount_point(const std::string& path);
// Creates an overlayfs whiteout (a 0/0 character device) at `path`.
void make_whiteout(const std::string& path);
// Whether overlayfs marked `dir` (in an upper folder) opaque.
bool is_opaque_dir(const std::string& dir);

}  // namespace winlayer::portable
