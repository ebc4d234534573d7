// SHA-256 on a thread of its own, for a producer whose own thread is busy with other work
// (reading stored files, filling a stream): update() copies into a block and hands full
// blocks to the worker, so hashing overlaps the caller's work on another core. At most
// kBlocks blocks of kBlockBytes are held.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sha256.hpp"

namespace winlayer {

class Sha256Worker {
public:
    Sha256Worker();
    ~Sha256Worker();
    Sha256Worker(const Sha256Worker&) = delete;
    Sha256Worker& operator=(const Sha256Worker&) = delete;

    void update(const void* data, std::size_t n);
    // Room in the block being filled, for a caller that reads its data straight into it
    // (no copy): `n` is cut to what fits (at least 1). wrote(k) then adds its first k bytes
    // to the message; the bytes stay readable until the next room() or update().
    std::uint8_t* room(std::size_t& n);
    void wrote(std::size_t k);
    // Waits for the blocks handed over so far and returns "sha256:<hex>" of everything
    // passed to update(); more update() calls continue the same message.
    std::string oci_digest();
    // The same digest as bytes.
    Sha256::Digest digest();

private:
    static constexpr std::size_t kBlockBytes = std::size_t(1) << 20;
    static constexpr std::size_t kBlocks = 3;

    void hand_over();  // the current block to the worker; waits for a free one
    Sha256& drained();  // waits for the worker and hashes the current block
    void run();

    Sha256 hash_;  // touched by the worker only, until oci_digest() has waited for it
    std::vector<std::uint8_t> current_;  // kBlockBytes; its first used_ are the message's
    std::size_t used_ = 0;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<std::vector<std::uint8_t>> full_;
    std::vector<std::vector<std::uint8_t>> free_;
    bool busy_ = false;
    bool stop_ = false;
    std::thread thread_;
};

}  // namespace winlayer
