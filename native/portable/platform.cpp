// The parts of platform.hpp shared by the POSIX and Win32 implementations.
#include "../core/error.hpp"
#include "platform.hpp"

namespace winlayer::portable {

namespace {
bool is_sep(char c) {
#ifdef _WIN32
    return c == '/' || c == '\\';
#else
    return c == '/';
#endif
}
}  // namespace

std::string join(const std::string& a, const std::string& b) {
    if (a.empty()) return b;
    if (b.empty()) return a;
    return is_sep(a.back()) ? a + b : a + "/" + b;
}

std::string base_name(const std::string& path) {
    std::size_t end = path.size();
    while (end > 1 && is_sep(path[end - 1])) --end;
    std::size_t start = end;
    while (start > 0 && !is_sep(path[start - 1])) --start;
    return path.substr(start, end - start);
}

std::string dir_name(const std::string& path) {
    std::size_t end = path.size();
    while (end > 1 && is_sep(path[end - 1])) --end;
    while (end > 0 && !is_sep(path[end - 1])) --end;
    while (end > 1 && is_sep(path[end - 1])) --end;
    return path.substr(0, end);
}

std::string File::read_rest() {
    std::string out;
    std::uint8_t buf[65536];
    while (std::size_t n = read(buf, sizeof buf)) out.append(reinterpret_cast<char*>(buf), n);
    return out;
}

std::string read_file(const std::string& path) {
    auto data = read_file_if_exists(path);
    if (!data) throw Error::os(2 /*ENOENT*/, "open", path);
    return *data;
}

}  // namespace winlayer::portable
