#include "sha256.hpp"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#define WINLAYER_SHA_X86 1
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#define WINLAYER_TARGET_SHA
#else
#include <cpuid.h>
#define WINLAYER_TARGET_SHA __attribute__((target("sha,sse4.1,ssse3")))
#endif
#endif

namespace winlayer {

namespace {

alignas(16) constexpr std::uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

constexpr std::uint32_t kInitial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

inline std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

inline std::uint32_t load_be32(const std::uint8_t* p) {
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) |
           (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

void compress_portable(std::uint32_t state[8], const std::uint8_t* data, std::size_t blocks) {
    std::uint32_t w[64];
    for (; blocks > 0; --blocks, data += 64) {
        for (int i = 0; i < 16; ++i) w[i] = load_be32(data + 4 * i);
        for (int i = 16; i < 64; ++i) {
            std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        std::uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; ++i) {
            std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                               kRound[i] + w[i];
            std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

#ifdef WINLAYER_SHA_X86

// The SHA-NI instructions keep the state as ABEF / CDGH halves and do two rounds per
// sha256rnds2; each 4-round group consumes one 128-bit message-schedule word.
WINLAYER_TARGET_SHA
void compress_shani(std::uint32_t state[8], const std::uint8_t* data, std::size_t blocks) {
    const __m128i byteswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[0]));
    __m128i state1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[4]));
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                // CDAB
    state1 = _mm_shuffle_epi32(state1, 0x1B);          // EFGH
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  // ABEF
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);       // CDGH

    for (; blocks > 0; --blocks, data += 64) {
        const __m128i abef = state0;
        const __m128i cdgh = state1;
        __m128i w0 = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data)), byteswap);
        __m128i w1 = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16)), byteswap);
        __m128i w2 = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 32)), byteswap);
        __m128i w3 = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 48)), byteswap);

#define WINLAYER_SHA_ROUNDS(w, group)                                                              \
    do {                                                                                           \
        __m128i m = _mm_add_epi32(                                                                 \
            (w), _mm_load_si128(reinterpret_cast<const __m128i*>(&kRound[4 * (group)])));          \
        state1 = _mm_sha256rnds2_epu32(state1, state0, m);                                         \
        state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(m, 0x0E));                \
    } while (0)
// Next schedule word from the previous four (a oldest, d newest); result replaces a.
#define WINLAYER_SHA_SCHEDULE(a, b, c, d)                                                          \
    (a) = _mm_sha256msg2_epu32(                                                                    \
        _mm_add_epi32(_mm_sha256msg1_epu32((a), (b)), _mm_alignr_epi8((d), (c), 4)), (d))

        WINLAYER_SHA_ROUNDS(w0, 0);
        WINLAYER_SHA_ROUNDS(w1, 1);
        WINLAYER_SHA_ROUNDS(w2, 2);
        WINLAYER_SHA_ROUNDS(w3, 3);
        for (int group = 4; group < 16; group += 4) {
            WINLAYER_SHA_SCHEDULE(w0, w1, w2, w3);
            WINLAYER_SHA_ROUNDS(w0, group);
            WINLAYER_SHA_SCHEDULE(w1, w2, w3, w0);
            WINLAYER_SHA_ROUNDS(w1, group + 1);
            WINLAYER_SHA_SCHEDULE(w2, w3, w0, w1);
            WINLAYER_SHA_ROUNDS(w2, group + 2);
            WINLAYER_SHA_SCHEDULE(w3, w0, w1, w2);
            WINLAYER_SHA_ROUNDS(w3, group + 3);
        }
#undef WINLAYER_SHA_ROUNDS
#undef WINLAYER_SHA_SCHEDULE

        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
    }

    tmp = _mm_shuffle_epi32(state0, 0x1B);        // FEBA
    state1 = _mm_shuffle_epi32(state1, 0xB1);     // DCHG
    state0 = _mm_blend_epi16(tmp, state1, 0xF0);  // DCBA
    state1 = _mm_alignr_epi8(state1, tmp, 8);     // HGFE
    _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[0]), state0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[4]), state1);
}

bool cpu_has_sha_ni() {
#if defined(_MSC_VER) && !defined(__clang__)
    int regs[4];
    __cpuid(regs, 0);
    if (regs[0] < 7) return false;
    __cpuid(regs, 1);
    const bool sse41 = (regs[2] >> 19) & 1, ssse3 = (regs[2] >> 9) & 1;
    __cpuidex(regs, 7, 0);
    return sse41 && ssse3 && ((regs[1] >> 29) & 1);
#else
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const bool sse41 = (ecx >> 19) & 1, ssse3 = (ecx >> 9) & 1;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    return sse41 && ssse3 && ((ebx >> 29) & 1);
#endif
}

#endif  // WINLAYER_SHA_X86

using CompressFn = void (*)(std::uint32_t*, const std::uint8_t*, std::size_t);

CompressFn pick_compress() {
#ifdef WINLAYER_SHA_X86
    if (cpu_has_sha_ni()) return compress_shani;
#endif
    return compress_portable;
}

// Chosen once, on first use (thread-safe static initialization).
CompressFn compress_fn() {
    static const CompressFn fn = pick_compress();
    return fn;
}

}  // namespace

bool Sha256::hardware_accelerated() { return compress_fn() != compress_portable; }

void Sha256::reset() {
    std::memcpy(state_, kInitial, sizeof state_);
    block_len_ = 0;
    total_ = 0;
}

void Sha256::update(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    total_ += n;
    const CompressFn compress = portable_only_ ? compress_portable : compress_fn();
    if (block_len_ > 0) {
        std::size_t take = 64 - block_len_ < n ? 64 - block_len_ : n;
        std::memcpy(block_ + block_len_, p, take);
        block_len_ += take;
        p += take;
        n -= take;
        if (block_len_ < 64) return;
        compress(state_, block_, 1);
        block_len_ = 0;
    }
    if (n >= 64) {
        compress(state_, p, n / 64);
        p += n / 64 * 64;
        n %= 64;
    }
    if (n > 0) {
        std::memcpy(block_, p, n);
        block_len_ = n;
    }
}

Sha256::Digest Sha256::digest() const {
    std::uint32_t state[8];
    std::memcpy(state, state_, sizeof state);
    std::uint8_t tail[128] = {};
    std::memcpy(tail, block_, block_len_);
    tail[block_len_] = 0x80;
    const std::size_t tail_len = block_len_ < 56 ? 64 : 128;
    const std::uint64_t bits = total_ * 8;
    for (int i = 0; i < 8; ++i) tail[tail_len - 1 - i] = static_cast<std::uint8_t>(bits >> (8 * i));
    (portable_only_ ? compress_portable : compress_fn())(state, tail, tail_len / 64);
    Digest out;
    for (int i = 0; i < 8; ++i) {
        out[4 * i] = static_cast<std::uint8_t>(state[i] >> 24);
        out[4 * i + 1] = static_cast<std::uint8_t>(state[i] >> 16);
        out[4 * i + 2] = static_cast<std::uint8_t>(state[i] >> 8);
        out[4 * i + 3] = static_cast<std::uint8_t>(state[i]);
    }
    return out;
}

std::string Sha256::oci_digest() const { return "sha256:" + hex(digest()); }

std::string hex(const std::uint8_t* data, std::size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string out(2 * n, '0');
    for (std::size_t i = 0; i < n; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    return out;
}

std::string hex(const Sha256::Digest& digest) { return hex(digest.data(), digest.size()); }

}  // namespace winlayer
