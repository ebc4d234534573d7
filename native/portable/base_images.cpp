#include "base_images.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cctype>
#include <ctime>
#include <map>
#include <vector>

#include "../core/error.hpp"
#include "../core/sha256.hpp"
#include "chain.hpp"
#include "platform.hpp"

namespace winlayer::portable {

namespace {

// {3c2f4f2e-5d0b-4b63-9c6a-0f6b1d8e7a51}: the namespace of layer_guid.
constexpr std::uint8_t kGuidNamespace[16] = {0x3c, 0x2f, 0x4f, 0x2e, 0x5d, 0x0b, 0x4b, 0x63,
                                             0x9c, 0x6a, 0x0f, 0x6b, 0x1d, 0x8e, 0x7a, 0x51};

// A flat JSON object of string and number values (what image.json holds). Numbers are
// kept as their text. Anything else is an error.
std::map<std::string, std::string> parse_flat_object(const std::string& text, const std::string& path) {
    std::size_t i = 0;
    auto fail = [&](const char* what) -> Error {
        return Error(ErrorKind::StoreCorrupt,
                     std::string("malformed image metadata (") + what + " at byte " + std::to_string(i) + ")")
            .with_path(path);
    };
    auto ws = [&] {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) ++i;
    };
    auto string = [&]() -> std::string {
        if (i >= text.size() || text[i] != '"') throw fail("expected a string");
        ++i;
        std::string out;
        while (i < text.size() && text[i] != '"') {
            char c = text[i++];
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i >= text.size()) break;
            char e = text[i++];
            switch (e) {
            case '"': case '\\': case '/': out += e; break;
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            default: throw fail("unsupported escape");
            }
        }
        if (i >= text.size()) throw fail("unterminated string");
        ++i;
        return out;
    };
    std::map<std::string, std::string> out;
    ws();
    if (i >= text.size() || text[i++] != '{') throw fail("expected an object");
    ws();
    if (i < text.size() && text[i] == '}') return out;
    for (;;) {
        ws();
        std::string key = string();
        ws();
        if (i >= text.size() || text[i++] != ':') throw fail("expected ':'");
        ws();
        if (i < text.size() && text[i] == '"') {
            out[key] = string();
        } else {
            std::size_t start = i;
            while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '-')) ++i;
            if (i == start) throw fail("expected a string or a number");
            out[key] = text.substr(start, i - start);
        }
        ws();
        if (i < text.size() && text[i] == ',') {
            ++i;
            continue;
        }
        if (i < text.size() && text[i] == '}') return out;
        throw fail("expected ',' or '}'");
    }
}

std::string rfc3339(std::int64_t unix_ns) {
    std::time_t t = static_cast<std::time_t>(unix_ns / 1000000000);
    std::tm tm{};
#ifdef _WIN32
    gmtime_s(&tm, &t);
#else
    gmtime_r(&t, &tm);
#endif
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

void require(const std::string& root, const std::string& rel, const char* operation) {
    auto found = resolve_on_disk(root, rel);
    if (!found) throw Error::os(ENOENT, operation, join(root, rel));
}

}  // namespace

std::string json_quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        unsigned char u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", u);
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

namespace {

// One GetBaseImages entry from a folder's image.json (throws StoreCorrupt if damaged).
std::string image_json(const std::string& folder, const std::string& meta_path, const std::string& text) {
    auto meta = parse_flat_object(text, meta_path);
    for (const char* required : {"Name", "Version"})
        if (!meta.count(required))
            throw Error(ErrorKind::StoreCorrupt, std::string("image metadata lacks \"") + required + "\"")
                .with_path(meta_path);
    std::string created = meta.count("CreatedTime") ? meta["CreatedTime"] : rfc3339(stat_path(folder).mtime_ns);
    std::string size = meta.count("Size") ? meta["Size"] : "0";
    if (size.empty() || size.find_first_not_of("0123456789") != std::string::npos)
        throw Error(ErrorKind::StoreCorrupt, "image metadata \"Size\" is not a byte count").with_path(meta_path);
    return "{\"Name\":" + json_quote(meta["Name"]) + ",\"Version\":" + json_quote(meta["Version"]) +
           ",\"Path\":" + json_quote(folder) + ",\"Size\":" + size + ",\"CreatedTime\":" + json_quote(created) +
           "}";
}

}  // namespace

std::string list_base_images(const std::string& dir) {
    auto entries = list_dir(dir);
    std::sort(entries.begin(), entries.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
    std::string out = "{\"Images\":[";
    bool first = true;
    for (const auto& e : entries) {
        if (e.kind != NodeKind::Directory) continue;
        const std::string folder = join(dir, e.name);
        const std::string meta_path = join(folder, kImageFile);
        auto text = read_file_if_exists(meta_path);
        if (!text || stat_path(join(folder, "Files")).kind != NodeKind::Directory) continue;
        out += first ? "" : ",";
        first = false;
        try {
            out += image_json(folder, meta_path, *text);
        } catch (const Error&) {
            // A damaged image.json does not hide the other images: the entry is listed with
            // its Path only, and whoever restores images reports and skips it.
            out += "{\"Path\":" + json_quote(folder) + "}";
        }
    }
    return out + "]}";
}

std::string layer_guid(const std::string& name) {
    Sha256 h;
    h.update(kGuidNamespace, sizeof kGuidNamespace);
    h.update(name.data(), name.size());
    Sha256::Digest d = h.digest();
    d[6] = static_cast<std::uint8_t>((d[6] & 0x0f) | 0x80);  // version 8
    d[8] = static_cast<std::uint8_t>((d[8] & 0x3f) | 0x80);  // RFC 9562 variant
    std::string hx = hex(d.data(), 16);
    return hx.substr(0, 8) + "-" + hx.substr(8, 4) + "-" + hx.substr(12, 4) + "-" + hx.substr(16, 4) + "-" +
           hx.substr(20, 12);
}

void check_base_image(const std::string& layer_path) {
    if (stat_path(layer_path).kind != NodeKind::Directory) throw Error::os(ENOENT, "ProcessBaseImage", layer_path);
    for (const char* hive : {"DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"})
        require(layer_path, std::string("Files/Windows/System32/config/") + hive, "ProcessBaseImage");
}

void check_utility_image(const std::string& path) {
    if (stat_path(path).kind != NodeKind::Directory) throw Error::os(ENOENT, "ProcessUtilityImage", path);
    require(path, "Files", "ProcessUtilityImage");
    require(path, "Files/EFI/Microsoft/Boot/BCD", "ProcessUtilityImage");
}

}  // namespace winlayer::portable
