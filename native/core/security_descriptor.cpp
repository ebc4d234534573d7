#include "security_descriptor.hpp"

#include <cctype>
#include <cstdio>
#include <string_view>
#include <vector>

#include "error.hpp"

namespace winlayer {

namespace {

struct WellKnown {
    const char* alias;  // SDDL alias or ""
    const char* sid;
    const char* name;
};

// SDDL aliases that need no domain, plus a few accounts every Windows layer uses.
constexpr WellKnown kWellKnown[] = {
    {"WD", "S-1-1-0", "Everyone"},
    {"CO", "S-1-3-0", "CREATOR OWNER"},
    {"CG", "S-1-3-1", "CREATOR GROUP"},
    {"OW", "S-1-3-4", "OWNER RIGHTS"},
    {"NU", "S-1-5-2", "NT AUTHORITY\\NETWORK"},
    {"IU", "S-1-5-4", "NT AUTHORITY\\INTERACTIVE"},
    {"SU", "S-1-5-6", "NT AUTHORITY\\SERVICE"},
    {"AN", "S-1-5-7", "NT AUTHORITY\\ANONYMOUS LOGON"},
    {"ED", "S-1-5-9", "NT AUTHORITY\\ENTERPRISE DOMAIN CONTROLLERS"},
    {"PS", "S-1-5-10", "NT AUTHORITY\\SELF"},
    {"AU", "S-1-5-11", "NT AUTHORITY\\Authenticated Users"},
    {"RC", "S-1-5-12", "NT AUTHORITY\\RESTRICTED"},
    {"WR", "S-1-5-33", "NT AUTHORITY\\WRITE RESTRICTED"},
    {"SY", "S-1-5-18", "NT AUTHORITY\\SYSTEM"},
    {"LS", "S-1-5-19", "NT AUTHORITY\\LOCAL SERVICE"},
    {"NS", "S-1-5-20", "NT AUTHORITY\\NETWORK SERVICE"},
    {"BA", "S-1-5-32-544", "BUILTIN\\Administrators"},
    {"BU", "S-1-5-32-545", "BUILTIN\\Users"},
    {"BG", "S-1-5-32-546", "BUILTIN\\Guests"},
    {"PU", "S-1-5-32-547", "BUILTIN\\Power Users"},
    {"AO", "S-1-5-32-548", "BUILTIN\\Account Operators"},
    {"SO", "S-1-5-32-549", "BUILTIN\\Server Operators"},
    {"PO", "S-1-5-32-550", "BUILTIN\\Print Operators"},
    {"BO", "S-1-5-32-551", "BUILTIN\\Backup Operators"},
    {"RE", "S-1-5-32-552", "BUILTIN\\Replicator"},
    {"RU", "S-1-5-32-554", "BUILTIN\\Pre-Windows 2000 Compatible Access"},
    {"RD", "S-1-5-32-555", "BUILTIN\\Remote Desktop Users"},
    {"NO", "S-1-5-32-556", "BUILTIN\\Network Configuration Operators"},
    {"AC", "S-1-15-2-1", "APPLICATION PACKAGE AUTHORITY\\ALL APPLICATION PACKAGES"},
    {"LW", "S-1-16-4096", "Mandatory Label\\Low Mandatory Level"},
    {"ME", "S-1-16-8192", "Mandatory Label\\Medium Mandatory Level"},
    {"HI", "S-1-16-12288", "Mandatory Label\\High Mandatory Level"},
    {"SI", "S-1-16-16384", "Mandatory Label\\System Mandatory Level"},
    {"", "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464", "NT SERVICE\\TrustedInstaller"},
    {"", "S-1-15-2-2", "APPLICATION PACKAGE AUTHORITY\\ALL RESTRICTED APPLICATION PACKAGES"},
};

// Aliases that stand for a domain or machine account: they cannot be resolved here.
constexpr const char* kDomainAliases[] = {"DA", "DG", "DU", "DC", "DD", "CA", "SA", "EA", "PA", "RS",
                                          "LA", "LG", "CN", "AP", "KA", "EK", "RO", "CD", "CY", "ER"};

struct Right {
    const char* code;
    std::uint32_t mask;
};

constexpr Right kRights[] = {
    {"GA", 0x10000000}, {"GR", 0x80000000}, {"GW", 0x40000000}, {"GX", 0x20000000},
    {"RC", 0x00020000}, {"SD", 0x00010000}, {"WD", 0x00040000}, {"WO", 0x00080000},
    {"FA", 0x001F01FF}, {"FR", 0x00120089}, {"FW", 0x00120116}, {"FX", 0x001200A0},
    {"KA", 0x000F003F}, {"KR", 0x00020019}, {"KW", 0x00020006}, {"KX", 0x00020019},
    {"CC", 0x00000001}, {"DC", 0x00000002}, {"LC", 0x00000004}, {"SW", 0x00000008},
    {"RP", 0x00000010}, {"WP", 0x00000020}, {"DT", 0x00000040}, {"LO", 0x00000080},
    {"CR", 0x00000100},
};

struct AceFlag {
    const char* code;
    std::uint8_t flag;
};

constexpr AceFlag kAceFlags[] = {{"OI", 0x01}, {"CI", 0x02}, {"NP", 0x04}, {"IO", 0x08}, {"ID", 0x10}};

std::uint32_t u16(const std::uint8_t* p) { return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8); }
std::uint32_t u32(const std::uint8_t* p) { return u16(p) | (u16(p + 2) << 16); }

Error malformed(const std::string& what, std::size_t at) {
    return Error::invalid_layer("malformed security descriptor: " + what, "", static_cast<std::int64_t>(at));
}

// Validates the SID at `at` inside the descriptor; returns its sub-authority count.
std::size_t check_sid(const std::uint8_t* p, std::size_t size, std::size_t at) {
    if (at + 8 > size) throw malformed("SID outside the descriptor", at);
    if (p[at] != 1) throw malformed("SID revision " + std::to_string(p[at]), at);
    std::size_t count = p[at + 1];
    if (count > 15) throw malformed("SID with " + std::to_string(count) + " sub-authorities", at + 1);
    if (at + 8 + 4 * count > size) throw malformed("SID runs past the end", at);
    return count;
}

// The string form of a SID that check_sid accepted.
std::string sid_string(const std::uint8_t* p, std::size_t at, std::size_t count) {
    std::uint64_t authority = 0;
    for (int i = 0; i < 6; ++i) authority = (authority << 8) | p[at + 2 + static_cast<std::size_t>(i)];
    std::string s = "S-1-";
    if (authority >> 32) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "0x%012llX", static_cast<unsigned long long>(authority));
        s += buf;
    } else {
        s += std::to_string(authority);
    }
    for (std::size_t i = 0; i < count; ++i) {
        s += '-';
        s += std::to_string(u32(p + at + 8 + 4 * i));
    }
    return s;
}

// Validates an ACL at `at`; returns its ACE count.
std::uint32_t check_acl(const std::uint8_t* p, std::size_t size, std::size_t at, const char* which) {
    const std::string_view w = which;  // messages only: no allocation on the good path
    if (at + 8 > size) throw malformed(std::string(w) + " outside the descriptor", at);
    if (p[at] != 2 && p[at] != 4) throw malformed(std::string(w) + " revision " + std::to_string(p[at]), at);
    std::size_t acl_size = u16(p + at + 2);
    std::uint32_t count = u16(p + at + 4);
    if (acl_size < 8 || at + acl_size > size) throw malformed(std::string(w) + " size runs past the end", at + 2);
    std::size_t pos = at + 8;
    for (std::uint32_t i = 0; i < count; ++i) {
        if (pos + 4 > at + acl_size) throw malformed(std::string(w) + " ACE " + std::to_string(i) + " outside the ACL", pos);
        std::size_t ace_size = u16(p + pos + 2);
        if (ace_size < 4 || pos + ace_size > at + acl_size)
            throw malformed(std::string(w) + " ACE " + std::to_string(i) + " size", pos + 2);
        pos += ace_size;
    }
    return count;
}

void put16(std::string& out, std::uint32_t v) {
    out += static_cast<char>(v & 0xff);
    out += static_cast<char>((v >> 8) & 0xff);
}

void put32(std::string& out, std::uint32_t v) {
    put16(out, v & 0xffff);
    put16(out, v >> 16);
}

// --- SDDL ------------------------------------------------------------------------------

class SddlParser {
public:
    explicit SddlParser(const std::string& s) : s_(s) {}

    std::string run() {
        std::string owner, group, dacl;
        bool have_owner = false, have_group = false, have_dacl = false;
        std::uint16_t control = kSeSelfRelative;
        while (pos_ < s_.size()) {
            if (pos_ + 2 > s_.size() || s_[pos_ + 1] != ':') throw fail("expected O:, G:, D: or S:");
            char part = s_[pos_];
            std::size_t part_at = pos_;
            pos_ += 2;
            switch (part) {
            case 'O':
                if (have_owner) throw fail("owner given twice", part_at);
                owner = parse_sid();
                have_owner = true;
                break;
            case 'G':
                if (have_group) throw fail("group given twice", part_at);
                group = parse_sid();
                have_group = true;
                break;
            case 'D':
                if (have_dacl) throw fail("DACL given twice", part_at);
                dacl = parse_dacl(control);
                have_dacl = true;
                control |= kSeDaclPresent;
                break;
            case 'S':
                throw fail("SACLs (S:) are not supported", part_at);
            default:
                throw fail("expected O:, G:, D: or S:", part_at);
            }
        }
        if (!have_owner && !have_group && !have_dacl) throw fail("empty descriptor", 0);
        std::string out;
        std::uint32_t at = 20;
        std::uint32_t owner_at = have_owner ? at : 0;
        at += static_cast<std::uint32_t>(owner.size());
        std::uint32_t group_at = have_group ? at : 0;
        at += static_cast<std::uint32_t>(group.size());
        std::uint32_t dacl_at = have_dacl ? at : 0;
        out += '\x01';
        out += '\0';
        put16(out, control);
        put32(out, owner_at);
        put32(out, group_at);
        put32(out, 0);  // no SACL
        put32(out, dacl_at);
        out += owner;
        out += group;
        out += dacl;
        return out;
    }

private:
    Error fail(const std::string& what) const { return fail(what, pos_); }
    Error fail(const std::string& what, std::size_t at) const {
        return Error::invalid_layer("unsupported or malformed SDDL (MSWINDOWS.sd): " + what, "",
                                    static_cast<std::int64_t>(at));
    }

    static bool is_part_start(const std::string& s, std::size_t i) {
        return i + 1 < s.size() && s[i + 1] == ':' && (s[i] == 'O' || s[i] == 'G' || s[i] == 'D' || s[i] == 'S');
    }

    // A SID in binary form, from "S-1-..." or a two-letter alias; stops before the next
    // part (O:, G:, D:, S:) or at ')' / ';'.
    std::string parse_sid() {
        std::size_t start = pos_;
        if (s_.compare(pos_, 2, "S-") == 0) {
            std::size_t end = pos_ + 2;
            while (end < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[end])) || s_[end] == '-') &&
                   !is_part_start(s_, end))
                ++end;
            std::string text = s_.substr(pos_, end - pos_);
            pos_ = end;
            return sid_binary(text, start);
        }
        if (pos_ + 2 > s_.size()) throw fail("expected a SID");
        std::string alias = s_.substr(pos_, 2);
        pos_ += 2;
        for (const auto& w : kWellKnown)
            if (alias == w.alias) return sid_binary(w.sid, start);
        for (const char* d : kDomainAliases)
            if (alias == d) throw fail("alias '" + alias + "' names a domain account, which cannot be resolved", start);
        throw fail("unknown SID alias '" + alias + "'", start);
    }

    std::string sid_binary(const std::string& text, std::size_t at) const {
        // S-1-<authority>-<sub>...
        std::vector<std::string> parts;
        std::size_t b = 0;
        while (true) {
            std::size_t dash = text.find('-', b);
            parts.push_back(text.substr(b, dash == std::string::npos ? std::string::npos : dash - b));
            if (dash == std::string::npos) break;
            b = dash + 1;
        }
        if (parts.size() < 3 || parts[0] != "S" || parts[1] != "1") throw fail("bad SID '" + text + "'", at);
        if (parts.size() - 3 > 15) throw fail("SID with more than 15 sub-authorities", at);
        auto number = [&](const std::string& t, std::uint64_t max) {
            std::uint64_t v = 0;
            bool hex = t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X');
            std::size_t i = hex ? 2 : 0;
            if (t.size() == i || t.size() - i > 16) throw fail("bad SID '" + text + "'", at);
            for (; i < t.size(); ++i) {
                int d = digit(t[i], hex ? 16 : 10);
                if (d < 0) throw fail("bad SID '" + text + "'", at);
                v = v * (hex ? 16 : 10) + static_cast<std::uint64_t>(d);
                if (v > max) throw fail("SID number out of range in '" + text + "'", at);
            }
            return v;
        };
        std::uint64_t authority = number(parts[2], 0xffffffffffffULL);
        std::string out;
        out += '\x01';
        out += static_cast<char>(parts.size() - 3);
        for (int i = 5; i >= 0; --i) out += static_cast<char>((authority >> (8 * i)) & 0xff);
        for (std::size_t i = 3; i < parts.size(); ++i)
            put32(out, static_cast<std::uint32_t>(number(parts[i], 0xffffffffULL)));
        return out;
    }

    static int digit(char c, int base) {
        int d = (c >= '0' && c <= '9') ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        return d < base ? d : -1;
    }

    std::string parse_dacl(std::uint16_t& control) {
        while (pos_ < s_.size() && s_[pos_] != '(' && !is_part_start(s_, pos_)) {
            if (s_.compare(pos_, 2, "AI") == 0) {
                control |= kSeDaclAutoInherited;
                pos_ += 2;
            } else if (s_.compare(pos_, 2, "AR") == 0) {
                control |= kSeDaclAutoInheritReq;
                pos_ += 2;
            } else if (s_[pos_] == 'P') {
                control |= kSeDaclProtected;
                pos_ += 1;
            } else if (s_.compare(pos_, 17, "NO_ACCESS_CONTROL") == 0) {
                throw fail("NO_ACCESS_CONTROL (a NULL DACL) is not supported");
            } else {
                throw fail("unknown DACL flag");
            }
        }
        std::string aces;
        std::uint32_t count = 0;
        while (pos_ < s_.size() && s_[pos_] == '(') {
            aces += parse_ace();
            ++count;
        }
        if (8 + aces.size() > 0xffff) throw fail("DACL too large");
        std::string acl;
        acl += '\x02';  // ACL_REVISION
        acl += '\0';
        put16(acl, static_cast<std::uint32_t>(8 + aces.size()));
        put16(acl, count);
        put16(acl, 0);
        return acl + aces;
    }

    std::string parse_ace() {
        std::size_t open = pos_;
        std::size_t close = s_.find(')', pos_);
        if (close == std::string::npos) throw fail("ACE without ')'");
        std::vector<std::string> f;
        std::size_t b = pos_ + 1;
        while (true) {
            std::size_t semi = s_.find(';', b);
            if (semi == std::string::npos || semi > close) {
                f.push_back(s_.substr(b, close - b));
                break;
            }
            f.push_back(s_.substr(b, semi - b));
            b = semi + 1;
        }
        if (f.size() != 6) throw fail("ACE must have 6 fields (conditional and resource ACEs are not supported)", open);
        std::uint8_t type;
        if (f[0] == "A") {
            type = 0;  // ACCESS_ALLOWED_ACE_TYPE
        } else if (f[0] == "D") {
            type = 1;  // ACCESS_DENIED_ACE_TYPE
        } else {
            throw fail("ACE type '" + f[0] + "' is not supported (only A and D)", open);
        }
        std::uint8_t flags = 0;
        for (std::size_t i = 0; i < f[1].size(); i += 2) {
            std::string code = f[1].substr(i, 2);
            bool known = false;
            for (const auto& af : kAceFlags)
                if (code == af.code) {
                    flags |= af.flag;
                    known = true;
                }
            if (!known) throw fail("ACE flag '" + code + "' is not supported", open);
        }
        std::uint32_t mask = parse_rights(f[2], open);
        if (!f[3].empty() || !f[4].empty()) throw fail("object ACEs (GUIDs) are not supported", open);
        SddlParser sub(f[5]);
        std::string sid = sub.parse_sid();
        if (sub.pos_ != f[5].size()) throw fail("bad ACE SID '" + f[5] + "'", open);
        std::string ace;
        ace += static_cast<char>(type);
        ace += static_cast<char>(flags);
        put16(ace, static_cast<std::uint32_t>(8 + sid.size()));
        put32(ace, mask);
        ace += sid;
        pos_ = close + 1;
        return ace;
    }

    std::uint32_t parse_rights(const std::string& r, std::size_t at) const {
        if (r.size() > 2 && r[0] == '0' && (r[1] == 'x' || r[1] == 'X')) {
            if (r.size() > 10) throw fail("ACE rights out of range", at);
            std::uint32_t v = 0;
            for (std::size_t i = 2; i < r.size(); ++i) {
                int d = digit(r[i], 16);
                if (d < 0) throw fail("bad ACE rights '" + r + "'", at);
                v = v * 16 + static_cast<std::uint32_t>(d);
            }
            return v;
        }
        if (r.empty() || r.size() % 2) throw fail("bad ACE rights '" + r + "'", at);
        std::uint32_t v = 0;
        for (std::size_t i = 0; i < r.size(); i += 2) {
            std::string code = r.substr(i, 2);
            bool known = false;
            for (const auto& right : kRights)
                if (code == right.code) {
                    v |= right.mask;
                    known = true;
                }
            if (!known) throw fail("ACE right '" + code + "' is not supported", at);
        }
        return v;
    }

    const std::string& s_;
    std::size_t pos_ = 0;
};

}  // namespace

Sid describe_sid(const std::string& sid) {
    for (const auto& w : kWellKnown)
        if (sid == w.sid) return Sid{sid, w.alias, w.name};
    return Sid{sid, {}, {}};
}

namespace {

// Validates `sd`; describes its owner and group too when `describe`.
SecurityDescriptorInfo parse(const std::string& sd, bool describe) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(sd.data());
    std::size_t size = sd.size();
    if (size < 20) throw malformed("shorter than its 20-byte header", 0);
    if (p[0] != 1) throw malformed("revision " + std::to_string(p[0]), 0);
    SecurityDescriptorInfo info;
    info.control = static_cast<std::uint16_t>(u16(p + 2));
    if (!(info.control & kSeSelfRelative)) throw malformed("not self-relative", 2);
    std::uint32_t owner = u32(p + 4), group = u32(p + 8), sacl = u32(p + 12), dacl = u32(p + 16);
    auto check_offset = [&](std::uint32_t off, std::size_t field) {
        if (off != 0 && (off < 20 || off >= size)) throw malformed("offset outside the descriptor", field);
    };
    check_offset(owner, 4);
    check_offset(group, 8);
    check_offset(sacl, 12);
    check_offset(dacl, 16);
    if (owner) {
        std::size_t n = check_sid(p, size, owner);
        if (describe) info.owner = describe_sid(sid_string(p, owner, n));
    }
    if (group) {
        std::size_t n = check_sid(p, size, group);
        if (describe) info.group = describe_sid(sid_string(p, group, n));
    }
    info.has_dacl = (info.control & kSeDaclPresent) != 0;
    info.has_sacl = (info.control & kSeSaclPresent) != 0;
    if (info.has_dacl && dacl) info.dacl_aces = check_acl(p, size, dacl, "DACL");
    if (info.has_sacl && sacl) check_acl(p, size, sacl, "SACL");
    return info;
}

}  // namespace

SecurityDescriptorInfo parse_security_descriptor(const std::string& sd) { return parse(sd, true); }

void check_security_descriptor(const std::string& sd) { parse(sd, false); }

std::string sddl_to_security_descriptor(const std::string& sddl) { return SddlParser(sddl).run(); }

}  // namespace winlayer
