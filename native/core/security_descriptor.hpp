// Security descriptors of layer entries: the binary self-relative SECURITY_DESCRIPTOR
// that `MSWINDOWS.rawsd` carries (parsed safely, for validation and to show owner and
// group), and the legacy `MSWINDOWS.sd` SDDL string (converted to binary on import).
//
// SDDL subset accepted by sddl_to_security_descriptor:
//   O:<sid>  G:<sid>  D:<flags><aces>   in any order, each at most once; <flags> is any of
//   P, AI, AR; an ACE is (A|D;<ace flags>;<rights>;;;<sid>) with ace flags from OI CI NP
//   IO ID, rights a 0x hex number or a run of GA GR GW GX RC SD WD WO FA FR FW FX KA KR KW
//   KX CC DC LC SW RP WP DT LO CR, and <sid> an "S-1-..." string or a well-known alias
//   (BA, SY, BU, WD, CO, ...; see the table in the .cpp).
// Rejected with a clear error (never guessed): SACLs (S:), NO_ACCESS_CONTROL, object and
// callback ACEs (OA, OD, XA, ...), audit/label ACEs, object GUIDs, conditional or
// resource-attribute ACEs, domain-relative aliases (DA, DU, LA, ...) that need a domain.
// Binary layout written: header, owner, group, DACL (revision 2), control
// SE_SELF_RELATIVE plus SE_DACL_PRESENT / PROTECTED / AUTO_INHERITED / AUTO_INHERIT_REQ.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace winlayer {

constexpr std::uint16_t kSeDaclPresent = 0x0004;
constexpr std::uint16_t kSeSaclPresent = 0x0010;
constexpr std::uint16_t kSeDaclAutoInheritReq = 0x0100;
constexpr std::uint16_t kSeDaclAutoInherited = 0x0400;
constexpr std::uint16_t kSeDaclProtected = 0x1000;
constexpr std::uint16_t kSeSelfRelative = 0x8000;

struct Sid {
    std::string sid;    // "S-1-5-32-544"
    std::string alias;  // SDDL alias ("BA") or "" when it has none
    std::string name;   // well-known account name ("BUILTIN\Administrators") or ""
};

struct SecurityDescriptorInfo {
    std::uint16_t control = 0;
    std::optional<Sid> owner;
    std::optional<Sid> group;
    bool has_dacl = false;  // SE_DACL_PRESENT (a NULL DACL counts as present)
    bool has_sacl = false;
    std::uint32_t dacl_aces = 0;
};

// Parses and validates a self-relative security descriptor: revision 1, the
// SE_SELF_RELATIVE flag, every offset and SID and ACL inside the buffer. Throws
// InvalidLayer (offset = byte offset inside `sd`, no entry) when malformed.
SecurityDescriptorInfo parse_security_descriptor(const std::string& sd);
// The same checks, without describing owner and group (cheaper: no strings are made).
void check_security_descriptor(const std::string& sd);

// The SDDL alias and well-known name of a SID string (empty strings when unknown).
Sid describe_sid(const std::string& sid);

// The SDDL subset above -> self-relative binary. Throws InvalidLayer (offset = character
// position in `sddl`) naming what is malformed or not supported.
std::string sddl_to_security_descriptor(const std::string& sddl);

}  // namespace winlayer
