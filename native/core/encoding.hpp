// Byte encodings the Windows layer formats need, in portable code: standard base64
// (MSWINDOWS.rawsd and MSWINDOWS.xattr.* values) and UTF-8 <-> UTF-16LE (backup-stream
// names, reparse-point paths). Decoders return false (or throw where noted) instead of
// guessing, so that a hostile value can never be half-accepted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace winlayer {

// RFC 4648 standard alphabet, padded.
std::string base64_encode(const std::string& data);
// Reads what Go's base64.StdEncoding.DecodeString reads (go-winio decodes the records
// with it): padded base64 (a multiple of 4 characters, '=' only at the end), CR and LF
// anywhere skipped, bits under the padding ignored. Returns false on anything else; `out`
// is then unspecified.
bool base64_decode(const std::string& text, std::string& out);

// Whether `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(const std::string& s);

// Decodes one code point of well-formed UTF-8 at s[i], advancing i. Returns false at a
// malformed sequence (i is then unchanged).
bool next_code_point(std::string_view s, std::size_t& i, char32_t& cp);

// UTF-8 -> UTF-16LE bytes (2 per unit). Returns false for malformed UTF-8.
bool utf8_to_utf16le(const std::string& utf8, std::string& out);
// UTF-16LE bytes -> UTF-8. Returns false for an odd length or an unpaired surrogate.
bool utf16le_to_utf8(const std::uint8_t* data, std::size_t n, std::string& out);

// Appends the UTF-8 form of code point `cp` (must be a valid scalar value).
void append_utf8(std::string& out, char32_t cp);

}  // namespace winlayer
