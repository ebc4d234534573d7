// Byte sources and sinks: the streaming seams between Python, the tar codec and
// the backends. Implementations never buffer a whole entry.
#pragma once

#include <cstddef>
#include <cstdint>

namespace winlayer {

class Source {
public:
    virtual ~Source() = default;
    // Reads up to n bytes into buf; returns 0 only at end of stream.
    virtual std::size_t read(std::uint8_t* buf, std::size_t n) = 0;
};

class Sink {
public:
    virtual ~Sink() = default;
    // Writes all n bytes or throws winlayer::Error.
    virtual void write(const std::uint8_t* data, std::size_t n) = 0;
};

}  // namespace winlayer
