#include "sha256_worker.hpp"

#include <algorithm>
#include <cstring>

namespace winlayer {

Sha256Worker::Sha256Worker() : thread_([this] { run(); }) {
    current_.resize(kBlockBytes);
    for (std::size_t i = 1; i < kBlocks; ++i) free_.emplace_back(kBlockBytes);
}

Sha256Worker::~Sha256Worker() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    changed_.notify_all();
    thread_.join();
}

void Sha256Worker::update(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
        std::size_t k = n;
        std::uint8_t* to = room(k);  // cuts k: apart from the copy that uses it
        std::memcpy(to, p, k);
        p += k;
        n -= k;
        wrote(k);
    }
}

std::uint8_t* Sha256Worker::room(std::size_t& n) {
    n = std::min(n, kBlockBytes - used_);
    return current_.data() + used_;
}

void Sha256Worker::wrote(std::size_t k) {
    used_ += k;
    if (used_ == kBlockBytes) hand_over();
}

void Sha256Worker::hand_over() {
    std::unique_lock<std::mutex> lock(mutex_);
    full_.push_back(std::move(current_));
    changed_.notify_all();
    changed_.wait(lock, [&] { return !free_.empty(); });
    current_ = std::move(free_.back());
    free_.pop_back();
    used_ = 0;
}

Sha256& Sha256Worker::drained() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return full_.empty() && !busy_; });
    hash_.update(current_.data(), used_);
    used_ = 0;
    return hash_;
}

std::string Sha256Worker::oci_digest() { return drained().oci_digest(); }

Sha256::Digest Sha256Worker::digest() { return drained().digest(); }

void Sha256Worker::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        changed_.wait(lock, [&] { return stop_ || !full_.empty(); });
        if (stop_) return;
        std::vector<std::uint8_t> block = std::move(full_.front());
        full_.pop_front();
        busy_ = true;
        lock.unlock();
        hash_.update(block.data(), block.size());
        lock.lock();
        busy_ = false;
        free_.push_back(std::move(block));
        changed_.notify_all();
    }
}

}  // namespace winlayer
