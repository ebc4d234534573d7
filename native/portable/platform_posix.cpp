// POSIX implementation of platform.hpp (Linux and macOS). Relative operations go through
// the tree's directory fd (openat and friends) with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW; on
// Linux, opens use openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) when the kernel has it.
// A path of PATH_MAX bytes or more, which no single call takes (relative or not), is
// walked in pieces (with_short_path): a layer path may be 32,767 characters long.
#ifndef _WIN32

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <random>
#include <utility>

#include "../core/error.hpp"
#include "platform.hpp"

#ifdef __linux__
#include <linux/fs.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#endif

namespace winlayer::portable {

namespace {

int fd_of(std::intptr_t h) { return static_cast<int>(h); }

std::int64_t ts_ns(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

struct timespec ns_ts(std::int64_t ns) {
    struct timespec t;
    std::int64_t sec = ns / 1000000000;
    std::int64_t rem = ns % 1000000000;
    if (rem < 0) {
        rem += 1000000000;
        --sec;
    }
    t.tv_sec = static_cast<time_t>(sec);
    t.tv_nsec = static_cast<long>(rem);
    return t;
}

NodeStat from_stat(const struct stat& st) {
    NodeStat s;
    if (S_ISREG(st.st_mode)) s.kind = NodeKind::File;
    else if (S_ISDIR(st.st_mode)) s.kind = NodeKind::Directory;
    else if (S_ISLNK(st.st_mode)) s.kind = NodeKind::Symlink;
#ifdef __linux__
    else if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) s.kind = NodeKind::Whiteout;
#endif
    else s.kind = NodeKind::Other;
    s.size = static_cast<std::uint64_t>(st.st_size);
#ifdef __APPLE__
    s.atime_ns = ts_ns(st.st_atimespec);
    s.mtime_ns = ts_ns(st.st_mtimespec);
    s.ctime_ns = ts_ns(st.st_ctimespec);
#else
    s.atime_ns = ts_ns(st.st_atim);
    s.mtime_ns = ts_ns(st.st_mtim);
    s.ctime_ns = ts_ns(st.st_ctim);
#endif
    s.links = static_cast<std::uint32_t>(st.st_nlink);
    return s;
}

NodeKind dirent_kind(const struct dirent* d) {
#ifdef DT_DIR
    switch (d->d_type) {
    case DT_REG: return NodeKind::File;
    case DT_DIR: return NodeKind::Directory;
    case DT_LNK: return NodeKind::Symlink;
    case DT_UNKNOWN: return NodeKind::Missing;  // caller stats
    default: return NodeKind::Other;
    }
#else
    (void)d;
    return NodeKind::Missing;
#endif
}

int open_beneath(int dirfd, const char* rel, int flags, mode_t mode) {
#if defined(__linux__) && defined(SYS_openat2)
    static bool have_openat2 = true;
    if (have_openat2) {
        struct {
            std::uint64_t flags, mode, resolve;
        } how{static_cast<std::uint64_t>(flags), static_cast<std::uint64_t>(mode),
              0x08 /*RESOLVE_BENEATH*/ | 0x04 /*RESOLVE_NO_SYMLINKS*/};
        long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return static_cast<int>(fd);
        have_openat2 = false;  // old kernel or seccomp filter: fall back
    }
#endif
    return ::openat(dirfd, rel, flags | O_NOFOLLOW, mode);
}

void close_keeping_errno(int fd) {
    int e = errno;
    ::close(fd);
    errno = e;
}

// Runs call(folder fd, path) for `path` below `dirfd` (or absolute), returning what the
// call returns: an *at() system call, -1 with errno on failure. A path the kernel would
// refuse as too long is walked first: pieces cut at a '/', each shorter than PATH_MAX,
// opened in turn as folders (`beneath`: as Tree opens, no symlink and nothing above
// `dirfd`; otherwise as the kernel resolves a path); the call gets the last piece.
template <typename Call>
auto with_short_path(int dirfd, const std::string& path, bool beneath, Call&& call)
    -> decltype(call(dirfd, "")) {
    if (path.size() < PATH_MAX) return call(dirfd, path.c_str());
#ifdef O_PATH
    constexpr int kWalk = O_PATH | O_DIRECTORY | O_CLOEXEC;  // no read right needed
#else
    constexpr int kWalk = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
#endif
    int fd = dirfd;
    std::size_t at = 0;
    while (path.size() - at >= PATH_MAX) {
        const std::size_t cut = path.rfind('/', at + PATH_MAX - 1);
        if (cut == std::string::npos || cut <= at) break;  // a name too long: the call says so
        const std::string piece = path.substr(at, cut - at);
        const int next = beneath ? open_beneath(fd, piece.c_str(), kWalk, 0)
                                 : ::openat(fd, piece.c_str(), kWalk);
        if (fd != dirfd) close_keeping_errno(fd);
        if (next < 0) return -1;
        fd = next;
        at = cut + 1;
        while (at < path.size() && path[at] == '/') ++at;  // the rest must stay relative
    }
    auto result = call(fd, path.c_str() + at);
    if (fd != dirfd) close_keeping_errno(fd);
    return result;
}

std::vector<DirEntry> list_fd(int fd, const std::string& where) {
    DIR* d = ::fdopendir(fd);
    if (!d) {
        int e = errno;
        ::close(fd);
        throw Error::os(e, "opendir", where);
    }
    ::rewinddir(d);  // from the first entry, whatever a dup of the fd read before
    std::vector<DirEntry> out;
    errno = 0;
    while (struct dirent* ent = ::readdir(d)) {
        if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
        DirEntry de{ent->d_name, dirent_kind(ent)};
        if (de.kind == NodeKind::Missing) {
            struct stat st;
            de.kind = ::fstatat(::dirfd(d), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
                          ? from_stat(st).kind
                          : NodeKind::Other;
        }
#ifdef __linux__
        else if (de.kind == NodeKind::Other) {
            struct stat st;
            if (::fstatat(::dirfd(d), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                de.kind = from_stat(st).kind;
        }
#endif
        out.push_back(std::move(de));
        errno = 0;
    }
    int e = errno;
    ::closedir(d);
    if (e) throw Error::os(e, "readdir", where);
    return out;
}

// Folders open at once while a tree is removed, whatever its depth.
constexpr int kMaxRemoveDepth = 64;

std::size_t remove_entry(int top, int dirfd, const std::string& name, int depth,
                         const std::string& where);

// Removes what the folder `fd` (`depth` folders below `top`) holds but the folders moved
// up into `top`, and closes fd. Returns how many were moved.
std::size_t remove_contents(int top, int fd, int depth, const std::string& where) {
    int keep = ::dup(fd);
    if (keep < 0) {
        int e = errno;
        ::close(fd);
        throw Error::os(e, "dup", where);
    }
    std::size_t moved = 0;
    try {
        for (const auto& e : list_fd(fd, where))  // closes fd
            moved += remove_entry(top, keep, e.name, depth, where + "/" + e.name);
    } catch (...) {
        ::close(keep);
        throw;
    }
    ::close(keep);
    return moved;
}

// Removes `name` in the folder `dirfd`, or moves it up into `top` when it is a folder too
// deep to open (returning 1 then).
std::size_t remove_entry(int top, int dirfd, const std::string& name, int depth,
                         const std::string& where) {
    if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) return 0;
    if (errno != EISDIR && errno != EPERM) throw Error::last_os("unlink", where);
    if (depth >= kMaxRemoveDepth) {
        // Everything in `top` goes, so a name taken there can be replaced; one taken by a
        // folder with contents (or a file) is retried with another.
        for (;;) {
            if (::renameat(dirfd, name.c_str(), top, (".removing-" + random_token()).c_str()) == 0) return 1;
            if (errno != ENOTEMPTY && errno != EEXIST && errno != ENOTDIR)
                throw Error::last_os("rename", where);
        }
    }
    int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        throw Error::last_os("open", where);
    }
    std::size_t moved = remove_contents(top, fd, depth + 1, where);
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
        throw Error::last_os("rmdir", where);
    return moved;
}

void remove_tree_at(int dirfd, const std::string& rel, bool beneath, const std::string& where) {
    auto unlink = [&](int flags) {
        return with_short_path(dirfd, rel, beneath, [&](int d, const char* p) { return ::unlinkat(d, p, flags); });
    };
    if (unlink(0) == 0 || errno == ENOENT) return;
    if (errno != EISDIR && errno != EPERM) throw Error::last_os("unlink", where);
    const int top = with_short_path(dirfd, rel, beneath, [](int d, const char* p) {
        return ::openat(d, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    });
    if (top < 0) {
        if (errno == ENOENT) return;
        throw Error::last_os("open", where);
    }
    try {
        // Each round removes what is at most kMaxRemoveDepth deep and moves the folders
        // below up into `top`, for the next round.
        for (;;) {
            int fd = ::dup(top);
            if (fd < 0) throw Error::last_os("dup", where);
            if (remove_contents(top, fd, 1, where) == 0) break;
        }
    } catch (...) {
        ::close(top);
        throw;
    }
    ::close(top);
    if (unlink(AT_REMOVEDIR) != 0 && errno != ENOENT) throw Error::last_os("rmdir", where);
}

void copy_fd(int in, int out, const std::string& src, const std::string& dst) {
#ifdef __linux__
    if (::ioctl(out, FICLONE, in) == 0) return;
    for (;;) {
        ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, std::size_t(1) << 30, 0);
        if (n == 0) return;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)
                break;  // plain copy below, from the current offsets
            throw Error::last_os("copy_file_range", dst);
        }
    }
#endif
    std::unique_ptr<std::uint8_t[]> buf(new std::uint8_t[1 << 20]);
    for (;;) {
        ssize_t n = ::read(in, buf.get(), 1 << 20);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error::last_os("read", src);
        }
        if (n == 0) return;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = ::write(out, buf.get() + off, static_cast<std::size_t>(n - off));
            if (w < 0) {
                if (errno == EINTR) continue;
                throw Error::last_os("write", dst);
            }
            off += w;
        }
    }
}

}  // namespace

// ---- File ---------------------------------------------------------------------------

File::~File() {
    if (handle_ != -1) ::close(fd_of(handle_));
}

File::File(File&& o) noexcept : handle_(o.handle_), path_(std::move(o.path_)) { o.handle_ = -1; }

File& File::operator=(File&& o) noexcept {
    if (this != &o) {
        if (handle_ != -1) ::close(fd_of(handle_));
        handle_ = o.handle_;
        path_ = std::move(o.path_);
        o.handle_ = -1;
    }
    return *this;
}

std::size_t File::read(std::uint8_t* buf, std::size_t n) {
    for (;;) {
        ssize_t r = ::read(fd_of(handle_), buf, n);
        if (r >= 0) return static_cast<std::size_t>(r);
        if (errno != EINTR) throw Error::last_os("read", path_);
    }
}

std::size_t File::read_at(std::uint64_t offset, std::uint8_t* buf, std::size_t n) {
    for (;;) {
        ssize_t r = ::pread(fd_of(handle_), buf, n, static_cast<off_t>(offset));
        if (r >= 0) return static_cast<std::size_t>(r);
        if (errno != EINTR) throw Error::last_os("pread", path_);
    }
}

void File::write(const std::uint8_t* data, std::size_t n) {
    while (n) {
        ssize_t w = ::write(fd_of(handle_), data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw Error::last_os("write", path_);
        }
        data += w;
        n -= static_cast<std::size_t>(w);
    }
}

void File::write_at(std::uint64_t offset, const std::uint8_t* data, std::size_t n) {
    while (n) {
        ssize_t w = ::pwrite(fd_of(handle_), data, n, static_cast<off_t>(offset));
        if (w < 0) {
            if (errno == EINTR) continue;
            throw Error::last_os("pwrite", path_);
        }
        data += w;
        n -= static_cast<std::size_t>(w);
        offset += static_cast<std::uint64_t>(w);
    }
}

void File::set_times(std::int64_t atime_ns, std::int64_t mtime_ns) {
    struct timespec ts[2] = {ns_ts(atime_ns), ns_ts(mtime_ns)};
    if (::futimens(fd_of(handle_), ts) != 0) throw Error::last_os("futimens", path_);
}

void File::sync() {
    if (::fsync(fd_of(handle_)) != 0) throw Error::last_os("fsync", path_);
}

void File::start_writeback() noexcept {
#ifdef __linux__
    // A hint: an error here is reported again by the sync that follows.
    (void)::sync_file_range(fd_of(handle_), 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
}

NodeStat File::stat() {
    struct stat st;
    if (::fstat(fd_of(handle_), &st) != 0) throw Error::last_os("fstat", path_);
    return from_stat(st);
}

void File::close() {
    if (handle_ == -1) return;
    int fd = fd_of(handle_);
    handle_ = -1;
    if (::close(fd) != 0 && errno != EINTR) throw Error::last_os("close", path_);
}

// ---- Tree ---------------------------------------------------------------------------

Tree::Tree(std::string root) : root_(std::move(root)) {
    int fd = with_short_path(AT_FDCWD, root_, false, [](int d, const char* p) {
        return ::openat(d, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    });
    if (fd < 0) throw Error::last_os("open", root_);
    handle_ = fd;
}

Tree::~Tree() {
    if (handle_ != -1) ::close(fd_of(handle_));
}

std::string Tree::full(const std::string& rel) const { return rel.empty() ? root_ : root_ + "/" + rel; }

File Tree::create(const std::string& rel, bool owner_only) {
    const mode_t mode = owner_only ? 0600 : 0644;
    int fd = with_short_path(fd_of(handle_), rel, true, [mode](int d, const char* p) {
        return open_beneath(d, p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    });
    if (fd < 0) throw Error::last_os("create", full(rel));
    return File(fd, full(rel));
}

File Tree::open_read(const std::string& rel) {
    int fd = with_short_path(fd_of(handle_), rel, true,
                             [](int d, const char* p) { return open_beneath(d, p, O_RDONLY | O_CLOEXEC, 0); });
    if (fd < 0) throw Error::last_os("open", full(rel));
    return File(fd, full(rel));
}

bool Tree::make_dir(const std::string& rel) {
    if (with_short_path(fd_of(handle_), rel, true, [](int d, const char* p) { return ::mkdirat(d, p, 0755); }) == 0)
        return true;
    int e = errno;
    if (e == EEXIST && stat(rel).kind == NodeKind::Directory) return false;
    throw Error::os(e, "mkdir", full(rel));
}

void Tree::make_dirs(const std::string& rel, std::size_t from) {
    int fd = from == 0 ? ::dup(fd_of(handle_)) : with_short_path(fd_of(handle_), rel.substr(0, from), true, [](int d, const char* p) {
        return open_beneath(d, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    });
    if (fd < 0) throw Error::last_os("open", full(rel.substr(0, from)));
    for (std::size_t at = from == 0 ? 0 : from + 1; at < rel.size();) {
        std::size_t end = std::min(rel.find('/', at), rel.size());
        const std::string name = rel.substr(at, end - at);
        int e = ::mkdirat(fd, name.c_str(), 0755) == 0 ? 0 : errno;
        int next = open_beneath(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (next < 0 && e == 0) e = errno;
        ::close(fd);
        if (next < 0) throw Error::os(e, "mkdir", full(rel.substr(0, end)));  // EEXIST: not a folder
        fd = next;
        at = end + 1;
    }
    ::close(fd);
}

void Tree::hard_link(const std::string& existing_rel, const std::string& new_rel) {
    const int fd = fd_of(handle_);
    int r = with_short_path(fd, existing_rel, true, [&](int from_dir, const char* from) {
        return with_short_path(fd, new_rel, true,
                               [&](int to_dir, const char* to) { return ::linkat(from_dir, from, to_dir, to, 0); });
    });
    if (r != 0) throw Error::last_os("link", full(new_rel));
}

void Tree::remove(const std::string& rel) {
    int r = with_short_path(fd_of(handle_), rel, true, [](int d, const char* p) {
        if (::unlinkat(d, p, 0) == 0) return 0;
        return errno == EISDIR || errno == EPERM ? ::unlinkat(d, p, AT_REMOVEDIR) : -1;
    });
    if (r != 0) throw Error::last_os("remove", full(rel));
}

void Tree::remove_tree(const std::string& rel) { remove_tree_at(fd_of(handle_), rel, true, full(rel)); }

NodeStat Tree::stat(const std::string& rel) {
    struct stat st;
    if (with_short_path(fd_of(handle_), rel.empty() ? "." : rel, true, [&](int d, const char* p) {
            return ::fstatat(d, p, &st, AT_SYMLINK_NOFOLLOW);
        }) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return NodeStat{};
        throw Error::last_os("stat", full(rel));
    }
    return from_stat(st);
}

void Tree::set_times(const std::string& rel, std::int64_t atime_ns, std::int64_t mtime_ns) {
    struct timespec ts[2] = {ns_ts(atime_ns), ns_ts(mtime_ns)};
    if (with_short_path(fd_of(handle_), rel, true,
                        [&](int d, const char* p) { return ::utimensat(d, p, ts, AT_SYMLINK_NOFOLLOW); }) != 0)
        throw Error::last_os("utimensat", full(rel));
}

std::vector<DirEntry> Tree::list(const std::string& rel) {
    int fd = rel.empty() ? ::openat(fd_of(handle_), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                         : with_short_path(fd_of(handle_), rel, true, [](int d, const char* p) {
                               return open_beneath(d, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
                           });
    if (fd < 0) throw Error::last_os("opendir", full(rel));
    return list_fd(fd, full(rel));
}

void Tree::copy_in(const std::string& src, const std::string& rel) {
    int in = with_short_path(AT_FDCWD, src, false,
                             [](int d, const char* p) { return ::openat(d, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC); });
    if (in < 0) throw Error::last_os("open", src);
    File out;
    try {
        out = create(rel);
        copy_fd(in, fd_of(out.native_handle()), src, out.path());
    } catch (...) {
        ::close(in);
        throw;
    }
    struct stat st;
    int e = ::fstat(in, &st) == 0 ? 0 : errno;
    ::close(in);
    if (e) throw Error::os(e, "fstat", src);
    NodeStat s = from_stat(st);
    out.set_times(s.atime_ns, s.mtime_ns);
    out.close();
}

void Tree::sync() {
#ifdef __linux__
    if (::syncfs(fd_of(handle_)) != 0) throw Error::last_os("syncfs", root_);
#else
    // fsync every file and folder, deepest first.
    std::vector<std::string> stack{""};
    std::vector<std::string> dirs;
    while (!stack.empty()) {
        std::string rel = stack.back();
        stack.pop_back();
        dirs.push_back(rel);
        for (const auto& e : list(rel)) {
            std::string child = rel.empty() ? e.name : rel + "/" + e.name;
            if (e.kind == NodeKind::Directory) stack.push_back(child);
            else if (e.kind == NodeKind::File) open_read(child).sync();
        }
    }
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) sync_dir(full(*it));
#endif
}

// ---- absolute paths -----------------------------------------------------------------

NodeStat stat_path(const std::string& path) {
    struct stat st;
    if (with_short_path(AT_FDCWD, path, false,
                        [&](int d, const char* p) { return ::fstatat(d, p, &st, AT_SYMLINK_NOFOLLOW); }) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return NodeStat{};
        throw Error::last_os("stat", path);
    }
    return from_stat(st);
}

std::string read_link(const std::string& path) {
    std::string target(256, '\0');
    for (;;) {
        ssize_t n = with_short_path(AT_FDCWD, path, false,
                                    [&](int d, const char* p) { return ::readlinkat(d, p, &target[0], target.size()); });
        if (n < 0) throw Error::last_os("readlink", path);
        if (static_cast<std::size_t>(n) < target.size()) {
            target.resize(static_cast<std::size_t>(n));
            return target;
        }
        target.resize(target.size() * 2);
    }
}

bool make_dir(const std::string& path) {
    if (with_short_path(AT_FDCWD, path, false, [](int d, const char* p) { return ::mkdirat(d, p, 0755); }) == 0)
        return true;
    int e = errno;
    if (e == EEXIST && stat_path(path).kind == NodeKind::Directory) return false;
    throw Error::os(e, "mkdir", path);
}

void make_dirs(const std::string& path) {
    // The ends of the missing folders, deepest first, then each made top down.
    std::vector<std::size_t> missing;
    for (std::size_t end = path.size(); end > 0 && stat_path(path.substr(0, end)).kind != NodeKind::Directory;) {
        missing.push_back(end);
        const std::size_t slash = path.rfind('/', end - 1);
        if (slash == std::string::npos) break;
        const std::size_t last = path.find_last_not_of('/', slash);
        end = last == std::string::npos ? 0 : last + 1;
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) make_dir(path.substr(0, *it));
}

std::vector<DirEntry> list_dir(const std::string& path) {
    int fd = with_short_path(AT_FDCWD, path, false,
                             [](int d, const char* p) { return ::openat(d, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (fd < 0) {
        if (errno == ENOENT) return {};
        throw Error::last_os("opendir", path);
    }
    return list_fd(fd, path);
}

void rename_noreplace(const std::string& from, const std::string& to) {
#if defined(__linux__) && defined(SYS_renameat2)
    if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), 1 /*NOREPLACE*/) == 0)
        return;
    if (errno != ENOSYS && errno != EINVAL) throw Error::last_os("rename", to);
#endif
    // Not atomic against a racing creator of `to`; callers hold the store lock.
    if (stat_path(to).kind != NodeKind::Missing) throw Error::os(EEXIST, "rename", to);
    if (::rename(from.c_str(), to.c_str()) != 0) throw Error::last_os("rename", to);
}

void remove_tree(const std::string& path) { remove_tree_at(AT_FDCWD, path, false, path); }

std::optional<std::string> read_file_if_exists(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return std::nullopt;
        throw Error::last_os("open", path);
    }
    return File(fd, path).read_rest();
}

void write_file_atomic(const std::string& path, const std::string& data) {
    std::string tmp = path + ".tmp-" + random_token();
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) throw Error::last_os("create", tmp);
    try {
        File f(fd, tmp);
        f.write(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
        f.sync();
        f.close();
        if (::rename(tmp.c_str(), path.c_str()) != 0) throw Error::last_os("rename", path);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    sync_dir(dir_name(path));
}

void sync_dir(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw Error::last_os("open", path);
    int r = ::fsync(fd);
    int e = errno;
    ::close(fd);
    if (r != 0 && e != EINVAL) throw Error::os(e, "fsync", path);
}

bool is_absolute(const std::string& path) { return !path.empty() && path[0] == '/'; }

std::string random_token() {
    std::random_device rd;  // /dev/urandom
    std::uint64_t v = (std::uint64_t(rd()) << 32) ^ rd();
    static const char* digits = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = digits[v & 15];
    return out;
}

std::int64_t now_ns() {
    struct timespec t;
    ::clock_gettime(CLOCK_REALTIME, &t);
    return ts_ns(t);
}

// ---- FileLock -----------------------------------------------------------------------

namespace {
int open_lock(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw Error::last_os("open", path);
    return fd;
}
}  // namespace

FileLock FileLock::acquire(const std::string& path) {
    int fd = open_lock(path);
    while (::flock(fd, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        int e = errno;
        ::close(fd);
        throw Error::os(e, "flock", path);
    }
    return FileLock(fd);
}

std::optional<FileLock> FileLock::try_acquire(const std::string& path) {
    int fd = open_lock(path);
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return FileLock(fd);
    int e = errno;
    ::close(fd);
    if (e == EWOULDBLOCK) return std::nullopt;
    throw Error::os(e, "flock", path);
}

FileLock::~FileLock() {
    if (handle_ != -1) ::close(fd_of(handle_));
}

// ---- overlayfs ----------------------------------------------------------------------

#ifdef __linux__

void mount_overlay(const std::vector<std::string>& lower, const std::string& upper,
                   const std::string& work, const std::string& target) {
    std::string lowers;
    for (const auto& l : lower) {
        for (char c : l)
            if (c == ':' || c == ',' || c == '\\')
                throw Error(ErrorKind::InvalidArgument, "overlayfs cannot take this folder name")
                    .with_path(l);
        lowers += (lowers.empty() ? "" : ":") + l;
    }
    std::string opts = "lowerdir=" + lowers;
    if (!upper.empty()) opts += ",upperdir=" + upper + ",workdir=" + work;
    const unsigned long flags = upper.empty() ? MS_RDONLY : 0;
    // Inside a user namespace overlayfs keeps its marks in user.* xattrs ("userxattr").
    if (::mount("overlay", target.c_str(), "overlay", flags, (opts + ",userxattr").c_str()) == 0) return;
    int first = errno;
    if (::mount("overlay", target.c_str(), "overlay", flags, opts.c_str()) == 0) return;
    int e = errno == EINVAL ? first : errno;
    if (e == ENODEV)
        throw Error(ErrorKind::BackendUnavailable,
                    "this kernel has no overlayfs; use WINLAYER_PORTABLE_MOUNT=copy");
    throw Error::os(e, "mount overlay", target);
}

void unmount(const std::string& target) {
    if (::umount2(target.c_str(), MNT_DETACH) == 0) return;
    if (errno == EINVAL || errno == ENOENT) return;  // not a mount point (here)
    throw Error::last_os("umount", target);
}

bool is_mount_point(const std::string& path) {
    struct stat a, b;
    if (::stat(path.c_str(), &a) != 0) return false;
    if (::stat((path + "/..").c_str(), &b) != 0) return false;
    return a.st_dev != b.st_dev;
}

void make_whiteout(const std::string& path) {
    if (with_short_path(AT_FDCWD, path, false,
                        [](int d, const char* p) { return ::mknodat(d, p, S_IFCHR | 0000, makedev(0, 0)); }) != 0)
        throw Error::last_os("mknod whiteout", path);
}

bool is_opaque_dir(const std::string& dir) {
    int fd = -1;
    if (dir.size() >= PATH_MAX) {  // no l*xattr call takes a folder fd: open the folder
        fd = with_short_path(AT_FDCWD, dir, false, [](int d, const char* p) {
            return ::openat(d, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        });
        if (fd < 0) return false;
    }
    bool opaque = false;
    char v[4];
    for (const char* name : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
        ssize_t n = fd < 0 ? ::lgetxattr(dir.c_str(), name, v, sizeof v) : ::fgetxattr(fd, name, v, sizeof v);
        opaque = opaque || (n == 1 && v[0] == 'y');
    }
    if (fd >= 0) ::close(fd);
    return opaque;
}

#else

void mount_overlay(const std::vector<std::string>&, const std::string&, const std::string&,
                   const std::string&) {
    throw Error(ErrorKind::BackendUnavailable,
                "overlayfs exists only on Linux; use WINLAYER_PORTABLE_MOUNT=copy");
}
void unmount(const std::string&) {}
bool is_mount_point(const std::string&) { return false; }
void make_whiteout(const std::string& path) { throw Error::os(ENOTSUP, "mknod whiteout", path); }
bool is_opaque_dir(const std::string&) { return false; }

#endif

}  // namespace winlayer::portable

#endif  // !_WIN32
