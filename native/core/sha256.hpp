// SHA-256 (FIPS 180-4) without external libraries: the diffID of every layer tar is
// the SHA-256 of its bytes, so this sits on the import hot path. x86-64 CPUs with the
// SHA extensions get a SHA-NI block function, chosen once at run time (cpuid); every
// other CPU uses the portable one.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace winlayer {

class Sha256 {
public:
    using Digest = std::array<std::uint8_t, 32>;

    // `portable_only` forces the portable block function (to test it on any CPU).
    explicit Sha256(bool portable_only = false) : portable_only_(portable_only) { reset(); }

    void reset();
    void update(const void* data, std::size_t n);
    // The digest of everything passed to update() since the last reset. The state is
    // left untouched: more update() calls continue the same message.
    Digest digest() const;
    // "sha256:<64 lowercase hex digits>", the OCI digest form.
    std::string oci_digest() const;
    std::uint64_t bytes_hashed() const { return total_; }

    // Whether the SHA-NI block function is in use on this CPU.
    static bool hardware_accelerated();

private:
    std::uint32_t state_[8];
    std::uint8_t block_[64];
    std::size_t block_len_ = 0;
    std::uint64_t total_ = 0;
    bool portable_only_;
};

std::string hex(const std::uint8_t* data, std::size_t n);
std::string hex(const Sha256::Digest& digest);

}  // namespace winlayer
