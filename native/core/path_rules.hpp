// Windows path rules for layer entries, enforced on every tar entry (import) and every
// exported entry, so that nothing hostile reaches a backend and every name a layer
// holds can exist on NTFS.
//
// A layer path is relative and '/'-separated: "Files/Windows/win.ini".
//   - The first component is one of the layer's top-level folders, spelled exactly:
//     `Files`, `Hives`, `UtilityVM` (the folder entries themselves are allowed).
//   - Rejected: an empty path or component, a leading '/', '\\' anywhere, a drive
//     letter ("C:"), `.` and `..` components, NUL and other control characters,
//     `< > : " | ? *`, a component ending in '.' or ' ', a component over 255 UTF-16
//     units, names not valid UTF-8, and reserved device names (CON, PRN, AUX, NUL,
//     COM1-9, LPT1-9, COM/LPT with superscript digits, CONIN$, CONOUT$), also with an
//     extension ("nul.txt"), in any case.
//   - ':' is only the alternate-data-stream separator: split_stream_path() takes
//     "Files/a.txt:stream" apart; the stream name may hold anything but NUL, controls,
//     '/', '\\' and ':'.
// Names compare as NTFS compares them: case-insensitively, by upper-casing each UTF-16
// unit. ntfs_upcase() knows ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic, Armenian
// and the fullwidth Latin letters; characters of other scripts compare exactly (two
// names that differ only in the case of such letters are taken as different here, where
// NTFS would see one name).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

namespace winlayer {

// The reason `path` breaks the rules above, or "" when it is valid. ':' is refused:
// split a stream entry with split_stream_path first.
std::string layer_path_problem(const std::string& path);

// The reason `name` is not a valid alternate-data-stream name, or "".
std::string stream_name_problem(const std::string& name);

// Splits "<file>:<stream>" at the first ':' of the last component. Returns false when
// the last component holds no ':'.
bool split_stream_path(const std::string& path, std::string& file, std::string& stream);

// The upper-case form NTFS compares by (see the limits above). Surrogates and code
// points outside the mapped blocks are returned unchanged.
char32_t ntfs_upcase(char32_t c);
// `path` with every character passed through ntfs_upcase (path must be valid UTF-8).
std::string ntfs_fold(const std::string& path);

// A 128-bit digest (truncated SHA-256) of a name folded with ntfs_fold: the compact key of
// name indexes, which then cost the same whatever the names' length. Finding two names
// with one key takes about 2^64 work, so a key stands for its name.
struct NameKey {
    std::uint64_t hi = 0, lo = 0;
    bool operator==(const NameKey& o) const { return hi == o.hi && lo == o.lo; }
};
struct NameKeyHash {
    std::size_t operator()(const NameKey& k) const { return static_cast<std::size_t>(k.lo); }
};
NameKey name_key(const std::string& path);  // of ntfs_fold(path)
NameKey bytes_key(const std::string& bytes);  // of the bytes as they are

// The names one layer defines, compared as NTFS compares them. A name costs about 50
// bytes whatever its length (a 128-bit digest of the folded name in a hash table, not
// the name): a million entries take about 50 MB.
class LayerNames {
public:
    enum class Kind : std::uint8_t { Directory, File, Symlink, Stream, HardLink, Whiteout };

    // Records `path`; returns false (and records nothing) when a name equal to it under
    // NTFS rules is already recorded, `*previous` then says of what kind.
    bool add(const std::string& path, Kind kind, Kind* previous = nullptr);
    // The kind of the recorded name equal to `path`, or nullptr.
    const Kind* find(const std::string& path) const;
    std::size_t size() const { return names_.size(); }

private:
    std::unordered_map<NameKey, Kind, NameKeyHash> names_;
};

const char* layer_name_kind(LayerNames::Kind kind);

}  // namespace winlayer
