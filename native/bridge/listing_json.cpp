// The JSON listing of a layer tar (`winlayer --json tar ls`), written natively: the import
// validation of the lister (codec.cpp) into a writer that formats each entry as the JSON
// text LayerTarEntry.to_json() gives through json.dumps(sort_keys=True) (ASCII only, \uXXXX
// escapes), so no Python object is made per entry. The import refuses paths, link targets
// and EA names that are not UTF-8; the escaper still decodes any bytes as the lister's str
// does (decode_utf8: surrogateescape), so the two can never disagree. The document goes to
// a Python binary stream in large chunks; everything else runs with the GIL released.
#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/layer_tar.hpp"
#include "../core/security_descriptor.hpp"
#include "bridge.hpp"
#include "pystream.hpp"

namespace winlayer::bridge {

namespace {

constexpr char kHex[] = "0123456789abcdef";

// The code points Python's UTF-8 decoder with surrogateescape makes of `s`: each byte
// that does not start a valid sequence becomes U+DC80..U+DCFF.
template <typename Emit>
void decode_surrogateescape(const std::string& s, Emit&& emit) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        if (c < 0x80) {
            emit(c);
            ++i;
            continue;
        }
        auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) {
            return i + k < n && p[i + k] >= lo && p[i + k] <= hi;
        };
        if (c >= 0xC2 && c <= 0xDF && cont(1)) {
            emit(((c & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu));
            i += 2;
            continue;
        }
        if (c >= 0xE0 && c <= 0xEF) {
            const unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
            if (cont(1, lo, hi) && cont(2)) {
                emit(((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu));
                i += 3;
                continue;
            }
        }
        if (c >= 0xF0 && c <= 0xF4) {
            const unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
            if (cont(1, lo, hi) && cont(2) && cont(3)) {
                emit(((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) |
                     (p[i + 3] & 0x3Fu));
                i += 4;
                continue;
            }
        }
        emit(0xDC00u + c);
        ++i;
    }
}

void put_u16_escape(std::string& out, unsigned u) {
    char b[6] = {'\\', 'u', kHex[(u >> 12) & 0xF], kHex[(u >> 8) & 0xF], kHex[(u >> 4) & 0xF], kHex[u & 0xF]};
    out.append(b, 6);
}

// A JSON string as json.dumps(ensure_ascii=True) writes it.
void put_string(std::string& out, const std::string& s) {
    out.push_back('"');
    bool plain = true;  // the common case: printable ASCII without quotes or backslashes
    for (unsigned char c : s)
        if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') {
            plain = false;
            break;
        }
    if (plain) {
        out.append(s);
    } else {
        decode_surrogateescape(s, [&](unsigned cp) {
            switch (cp) {
            case '"': out.append("\\\""); return;
            case '\\': out.append("\\\\"); return;
            case '\n': out.append("\\n"); return;
            case '\r': out.append("\\r"); return;
            case '\t': out.append("\\t"); return;
            case '\b': out.append("\\b"); return;
            case '\f': out.append("\\f"); return;
            default: break;
            }
            if (cp >= 0x20 && cp <= 0x7E) {
                out.push_back(static_cast<char>(cp));
            } else if (cp < 0x10000) {
                put_u16_escape(out, cp);
            } else {
                const unsigned v = cp - 0x10000;
                put_u16_escape(out, 0xD800 + (v >> 10));
                put_u16_escape(out, 0xDC00 + (v & 0x3FF));
            }
        });
    }
    out.push_back('"');
}

void put_hex(std::string& out, const std::string& bytes) {
    const std::size_t at = out.size();
    out.resize(at + 2 * bytes.size());
    char* d = &out[at];
    for (unsigned char c : bytes) {
        *d++ = kHex[c >> 4];
        *d++ = kHex[c & 0xF];
    }
}

template <typename Int>
void put_int(std::string& out, Int v) {
    out.append(std::to_string(v));
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

// Days since 1970-01-01 -> proleptic Gregorian year, month, day (H. Hinnant's algorithm).
void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
    z += 719468;
    const std::int64_t era = floor_div(z, 146097);
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
}

// A FILETIME as layertar.filetime_to_datetime(...).isoformat() with "Z": truncated to
// microseconds; null past datetime's range (years 1..9999).
void put_filetime(std::string& out, std::int64_t ticks) {
    constexpr std::int64_t kDayMicros = 86400LL * 1000000;
    constexpr std::int64_t kDays1601 = -134774;  // 1601-01-01 in days since 1970-01-01
    const std::int64_t us = floor_div(ticks, 10);
    const std::int64_t days = floor_div(us, kDayMicros);
    const std::int64_t in_day = us - days * kDayMicros;
    std::int64_t y;
    unsigned m, d;
    civil_from_days(days + kDays1601, y, m, d);
    if (y < 1 || y > 9999) {
        out.append("null");
        return;
    }
    const std::int64_t secs = in_day / 1000000, micros = in_day % 1000000;
    char b[30];
    char* p = b;
    auto digits = [&p](std::int64_t v, int n) {  // v in [0, 10^n)
        for (int k = n - 1; k >= 0; --k, v /= 10) p[k] = static_cast<char>('0' + v % 10);
        p += n;
    };
    *p++ = '"';
    digits(y, 4);
    *p++ = '-';
    digits(m, 2);
    *p++ = '-';
    digits(d, 2);
    *p++ = 'T';
    digits(secs / 3600, 2);
    *p++ = ':';
    digits(secs / 60 % 60, 2);
    *p++ = ':';
    digits(secs % 60, 2);
    if (micros != 0) {
        *p++ = '.';
        digits(micros, 6);
    }
    out.append(b, static_cast<std::size_t>(p - b));
    out.append("Z\"");
}

void put_account(std::string& out, const std::optional<Sid>& sid) {
    if (!sid) {
        out.append("null");
        return;
    }
    out.append("{\"alias\": ");
    put_string(out, sid->alias);
    out.append(", \"name\": ");
    put_string(out, sid->name);
    out.append(", \"sid\": ");
    put_string(out, sid->sid);
    out.push_back('}');
}

// {name: value.hex()} with sort_keys: names in code point order, the last value of a
// repeated name.
void put_extended_attributes(std::string& out, const std::vector<std::pair<std::string, std::string>>& eas) {
    if (eas.empty()) {
        out.append("{}");
        return;
    }
    std::vector<std::pair<std::vector<unsigned>, std::size_t>> keys;
    keys.reserve(eas.size());
    for (std::size_t i = 0; i < eas.size(); ++i) {
        std::vector<unsigned> cps;
        decode_surrogateescape(eas[i].first, [&](unsigned cp) { cps.push_back(cp); });
        keys.emplace_back(std::move(cps), i);
    }
    std::stable_sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    out.push_back('{');
    bool first = true;
    for (std::size_t k = 0; k < keys.size(); ++k) {
        if (k + 1 < keys.size() && keys[k + 1].first == keys[k].first) continue;  // a later value wins
        const auto& [name, value] = eas[keys[k].second];
        if (!first) out.append(", ");
        first = false;
        put_string(out, name);
        out.append(": \"");
        put_hex(out, value);
        out.push_back('"');
    }
    out.push_back('}');
}

// Formats every entry the import passes on (the lister's view of them: hard links and
// whiteouts carry only their path and target) and hands the text to a Python stream's
// write() in chunks of about kChunk bytes, taking the GIL only for that call.
class JsonListingWriter : public LayerWriter {
public:
    JsonListingWriter(py::object out, std::string compression)
        : write_(out.attr("write")), compression_(std::move(compression)), interrupt_(signal_check()) {
        text_.reserve(kChunk + (64 << 10));
        text_.append("{\n  \"entries\": [");
    }

    ~JsonListingWriter() override {
        py::gil_scoped_acquire gil;
        write_ = py::object();
    }

    void add(const LayerEntry& e) override {
        std::optional<Sid> owner, group;
        if (!e.security_descriptor.empty()) {
            if (e.security_descriptor != last_sd_) {
                SecurityDescriptorInfo info = parse_security_descriptor(e.security_descriptor);  // validated by the import
                last_sd_ = e.security_descriptor;
                last_sd_hex_.clear();
                put_hex(last_sd_hex_, last_sd_);
                last_owner_ = std::move(info.owner);
                last_group_ = std::move(info.group);
            }
            owner = last_owner_;
            group = last_group_;
        }
        put_entry(e, owner, group);
    }

    // Data is not kept; a long file is where Ctrl-C is looked for now and then.
    void write(const std::uint8_t*, std::size_t) override {
        if (interrupt_ && ++chunks_ % kChunksPerCheck == 0) interrupt_();
    }

    void add_link(const std::string& path, const std::string& target) override {
        LayerEntry e;
        e.path = path;
        e.type = EntryType::HardLink;
        e.link_target = target;
        put_entry(e, std::nullopt, std::nullopt);
    }

    void remove(const std::string& path) override {
        LayerEntry e;
        e.path = path;
        e.type = EntryType::Whiteout;
        put_entry(e, std::nullopt, std::nullopt);
    }

    // The summary, then the rest of the document goes out.
    void commit(const CommitInfo& info) override {
        text_.append("\n  ],\n  \"compression\": ");
        put_string(text_, compression_);
        text_.append(",\n  \"data_size\": ");
        put_int(text_, info.size);
        text_.append(",\n  \"diff_id\": ");
        put_string(text_, info.diff_id);
        text_.append("\n}\n");
        flush();
    }

    void abort() noexcept override {}

private:
    static constexpr std::size_t kChunk = std::size_t(1) << 20;
    static constexpr std::size_t kChunksPerCheck = 32;  // data chunks are at most 1 MiB

    void put_entry(const LayerEntry& e, const std::optional<Sid>& owner, const std::optional<Sid>& group) {
        std::string& o = text_;
        o.append(entries_++ ? ",\n    " : "\n    ");
        const bool no_times =
            e.type == EntryType::AlternateStream || e.type == EntryType::HardLink || e.type == EntryType::Whiteout;
        auto time = [&](std::int64_t ticks) {
            if (no_times)
                o.append("null");
            else
                put_filetime(o, ticks);
        };
        o.append("{\"attributes\": ");
        put_int(o, e.attributes);
        o.append(", \"change_time\": ");
        time(e.times.change);
        o.append(", \"creation_time\": ");
        time(e.times.creation);
        o.append(", \"extended_attributes\": ");
        put_extended_attributes(o, e.extended_attributes);
        o.append(", \"group\": ");
        put_account(o, group);
        o.append(", \"last_access_time\": ");
        time(e.times.last_access);
        o.append(", \"last_write_time\": ");
        time(e.times.last_write);
        o.append(", \"link_target\": ");
        if (e.link_target.empty())
            o.append("null");
        else
            put_string(o, e.link_target);
        o.append(e.mount_point ? ", \"mount_point\": true" : ", \"mount_point\": false");
        o.append(", \"owner\": ");
        put_account(o, owner);
        o.append(", \"path\": ");
        put_string(o, e.path);
        o.append(", \"security_descriptor\": ");
        if (e.security_descriptor.empty()) {
            o.append("null");
        } else {
            o.push_back('"');
            o.append(last_sd_hex_);
            o.push_back('"');
        }
        o.append(", \"size\": ");
        put_int(o, e.size);
        o.append(", \"stream\": ");
        if (e.type == EntryType::AlternateStream) {
            // LayerTarEntry.stream: after the last '/', after the first ':'.
            const std::size_t slash = e.path.rfind('/');
            const std::size_t start = slash == std::string::npos ? 0 : slash + 1;
            const std::size_t colon = e.path.find(':', start);
            put_string(o, colon == std::string::npos ? std::string() : e.path.substr(colon + 1));
        } else {
            o.append("null");
        }
        o.append(", \"type\": \"");
        o.append(entry_type_name(e.type));
        o.append("\"}");
        if (o.size() >= kChunk) flush();
    }

    // Hands the text to the stream (GIL held for the call only), looking for Ctrl-C first.
    void flush() {
        if (text_.empty()) return;
        if (interrupt_) interrupt_();
        py::gil_scoped_acquire gil;
        std::size_t done = 0;
        while (done < text_.size()) {
            auto view = py::memoryview::from_memory(text_.data() + done, static_cast<py::ssize_t>(text_.size() - done));
            py::object r = write_(view);
            view.attr("release")();  // the stream must not keep a view of native memory
            if (r.is_none())
                throw Error(ErrorKind::InvalidArgument, "write() returned None (non-blocking streams are not supported)");
            const auto n = r.cast<py::ssize_t>();
            if (n <= 0 || static_cast<std::size_t>(n) > text_.size() - done)
                throw Error(ErrorKind::InvalidArgument, "write() returned an invalid byte count " + std::to_string(n));
            done += static_cast<std::size_t>(n);
        }
        text_.clear();
    }

    py::object write_;
    std::string compression_;
    const Interrupt& interrupt_;
    std::string text_;
    std::uint64_t entries_ = 0;
    std::uint64_t chunks_ = 0;
    std::string last_sd_, last_sd_hex_;
    std::optional<Sid> last_owner_, last_group_;
};

void write_layer_tar_json(py::object source, py::object out, std::string compression, bool allow_parent_links,
                          std::string expected_digest) {
    std::unique_ptr<Source> src = source_from_python(std::move(source));
    std::optional<JsonListingWriter> writer;
    writer.emplace(std::move(out), std::move(compression));
    ImportOptions options;
    options.allow_parent_links = allow_parent_links;
    options.expected_digest = std::move(expected_digest);
    options.record_tar_split = false;
    options.hash_in_background = true;  // this thread parses and formats meanwhile
    std::exception_ptr error;
    {
        py::gil_scoped_release nogil;
        try {
            import_layer_tar(*src, *writer, options);
        } catch (...) {
            error = rethrowable_current_exception();
        }
        writer.reset();  // takes the GIL to drop the stream's method
        src.reset();     // a Python source does the same
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace

void bind_listing_json(py::module_& m) {
    m.def("write_layer_tar_json", &write_layer_tar_json, py::arg("source"), py::arg("out"), py::kw_only(),
          py::arg("compression"), py::arg("allow_parent_links") = false, py::arg("expected_digest") = "",
          "Validate a layer tar as the lister does and write its JSON listing (winlayer --json tar ls) "
          "to the binary stream `out`, in chunks of about 1 MiB; raises as the lister does, after "
          "the chunks written before the error.");
}

}  // namespace winlayer::bridge
