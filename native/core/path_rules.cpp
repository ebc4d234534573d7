#include "path_rules.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "encoding.hpp"
#include "ntfs_upcase_table.hpp"
#include "sha256.hpp"

namespace winlayer {

namespace {

constexpr std::size_t kMaxComponentUnits = 255;

bool is_forbidden_char(char32_t c) {
    return c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == ':' || c == '"' || c == '|' ||
           c == '?' || c == '*' || c == '\\';
}

char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }

bool iequals_ascii(std::string_view a, const char* b) {
    std::size_t n = std::strlen(b);
    if (a.size() != n) return false;
    for (std::size_t i = 0; i < n; ++i)
        if (ascii_upper(a[i]) != b[i]) return false;
    return true;
}

// CON, PRN, AUX, NUL, COM1-9, LPT1-9 (and with superscript 1-3), CONIN$, CONOUT$.
bool is_reserved_device(std::string_view component) {
    std::string_view base = component.substr(0, component.find('.'));
    while (!base.empty() && base.back() == ' ') base.remove_suffix(1);
    for (const char* name : {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"})
        if (iequals_ascii(base, name)) return true;
    if (base.size() < 4) return false;
    std::string_view stem = base.substr(0, 3);
    if (!iequals_ascii(stem, "COM") && !iequals_ascii(stem, "LPT")) return false;
    std::string_view digit = base.substr(3);
    if (digit.size() == 1 && digit[0] >= '1' && digit[0] <= '9') return true;
    return digit == "\xc2\xb9" || digit == "\xc2\xb2" || digit == "\xc2\xb3";  // superscript 1, 2, 3
}

// Checks one component of a layer path (not the top-level folder rule).
std::string component_problem(std::string_view c) {
    if (c.empty()) return "empty path component";
    if (c == ".") return "'.' path component";
    if (c == "..") return "'..' path component";
    std::size_t units = 0;
    std::size_t i = 0;
    while (i < c.size()) {
        char32_t cp;
        if (!next_code_point(c, i, cp)) return "name is not valid UTF-8";
        if (cp == ':') return "':' is only allowed as the alternate-data-stream separator (file:stream)";
        if (cp == '\\') return "backslash in a name";
        if (cp == 0) return "NUL in a name";
        if (is_forbidden_char(cp)) return "character Windows forbids in a name";
        units += cp >= 0x10000 ? 2 : 1;
    }
    if (units > kMaxComponentUnits) return "name longer than 255 characters";
    if (c.back() == '.' || c.back() == ' ') return "name ends with a dot or a space";
    if (is_reserved_device(c)) return "reserved Windows device name";
    return {};
}

}  // namespace

std::string layer_path_problem(const std::string& path) {
    if (path.empty()) return "empty path";
    if (path[0] == '/') return "absolute path";
    if (path.find('\\') != std::string::npos) return "backslash in a path (use '/')";
    if (path.size() >= 2 && path[1] == ':' &&
        ((path[0] >= 'A' && path[0] <= 'Z') || (path[0] >= 'a' && path[0] <= 'z')))
        return "drive letter in a path";
    std::size_t start = 0;
    bool first = true;
    while (true) {
        std::size_t slash = path.find('/', start);
        std::string_view c = std::string_view(path).substr(start, slash == std::string::npos ? std::string::npos : slash - start);
        std::string problem = component_problem(c);
        if (!problem.empty()) return problem;
        if (first && c != "Files" && c != "Hives" && c != "UtilityVM")
            return "outside the layer's top-level folders (Files/, Hives/, UtilityVM/)";
        first = false;
        if (slash == std::string::npos) break;
        start = slash + 1;
    }
    return {};
}

std::string path_length_problem(const std::string& path) {
    if (path.size() <= kMaxPathUnits) return {};  // a unit takes at least one byte
    std::size_t units = 0;
    for (unsigned char b : path) {
        if ((b & 0xc0) != 0x80) ++units;  // every byte that starts a character
        if (b >= 0xf0) ++units;           // four-byte characters are surrogate pairs
    }
    if (units <= kMaxPathUnits) return {};
    return "path of " + std::to_string(units) + " UTF-16 units is longer than Windows allows (32,767)";
}

std::string stream_name_problem(const std::string& name) {
    if (name.empty()) return "empty alternate stream name";
    std::size_t i = 0;
    std::size_t units = 0;
    while (i < name.size()) {
        char32_t cp;
        if (!next_code_point(name, i, cp)) return "alternate stream name is not valid UTF-8";
        if (cp < 0x20 || cp == 0x7f || cp == '/' || cp == '\\' || cp == ':')
            return "alternate stream name holds a control character, '/', '\\' or ':'";
        units += cp >= 0x10000 ? 2 : 1;
    }
    if (units > kMaxComponentUnits) return "alternate stream name longer than 255 characters";
    return {};
}

bool split_stream_path(const std::string& path, std::string& file, std::string& stream) {
    std::size_t slash = path.rfind('/');
    std::size_t colon = path.find(':', slash == std::string::npos ? 0 : slash + 1);
    if (colon == std::string::npos) return false;
    file = path.substr(0, colon);
    stream = path.substr(colon + 1);
    return true;
}

std::string canonical_order_key(const std::string& entry_path, bool whiteout) {
    std::string path = entry_path, stream;
    const bool is_stream = !whiteout && split_stream_path(entry_path, path, stream);
    std::string key = path;
    std::replace(key.begin(), key.end(), '/', '\0');
    if (whiteout) {
        std::size_t cut = key.rfind('\0');
        key.insert(cut == std::string::npos ? 0 : cut + 1, 1, '\0');
    } else if (is_stream) {
        key.append(3, '\0');
        key += stream;
    }
    return key;
}

char32_t ntfs_upcase(char32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
    if (c > 0xffff) return c;  // two code units, surrogates: NTFS maps each to itself
    const UpcaseRun* run = std::upper_bound(kUpcaseRuns, kUpcaseRuns + kUpcaseRunCount, c,
                                            [](char32_t v, const UpcaseRun& r) { return v < r.first; });
    if (run == kUpcaseRuns) return c;
    --run;
    if (c > run->last || (c - run->first) % run->stride != 0) return c;
    return static_cast<char32_t>(static_cast<std::int32_t>(c) + run->delta);
}

std::string ntfs_fold(const std::string& path) {
    std::string out;
    out.reserve(path.size());
    std::size_t i = 0;
    while (i < path.size()) {
        unsigned char b = static_cast<unsigned char>(path[i]);
        if (b < 0x80) {  // the common case, without decoding
            out += static_cast<char>((b >= 'a' && b <= 'z') ? b - 32 : b);
            ++i;
            continue;
        }
        char32_t cp;
        if (!next_code_point(path, i, cp)) {  // not reached for validated paths
            out += path[i++];
            continue;
        }
        append_utf8(out, ntfs_upcase(cp));
    }
    return out;
}

NameKey name_key(const std::string& path) { return bytes_key(ntfs_fold(path)); }

NameKey bytes_key(const std::string& bytes) {
    Sha256 h;
    h.update(bytes.data(), bytes.size());
    Sha256::Digest d = h.digest();
    NameKey k;
    for (int i = 0; i < 8; ++i) {
        k.hi = (k.hi << 8) | d[static_cast<std::size_t>(i)];
        k.lo = (k.lo << 8) | d[static_cast<std::size_t>(i + 8)];
    }
    return k;
}

bool LayerNames::add(const std::string& path, Kind kind, Kind* previous) {
    auto [it, inserted] = names_.emplace(name_key(path), kind);
    if (!inserted && previous) *previous = it->second;
    return inserted;
}

const LayerNames::Kind* LayerNames::find(const std::string& path) const {
    auto it = names_.find(name_key(path));
    return it == names_.end() ? nullptr : &it->second;
}

const char* layer_name_kind(LayerNames::Kind kind) {
    switch (kind) {
    case LayerNames::Kind::Directory: return "directory";
    case LayerNames::Kind::File: return "file";
    case LayerNames::Kind::Symlink: return "symlink";
    case LayerNames::Kind::Stream: return "alternate data stream";
    case LayerNames::Kind::HardLink: return "hard link";
    case LayerNames::Kind::Whiteout: return "whiteout";
    }
    return "entry";
}

}  // namespace winlayer
