// In-memory Source, Sink and LayerReader, for bindings, tests and fuzzers that hold a
// small layer in memory. Not for layer data of real size: that streams.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "io.hpp"
#include "layer.hpp"

namespace winlayer {

// Reads `data` (not owned), at most `max_chunk` bytes per call so that readers meet short
// reads and headers that straddle them.
class MemorySource : public Source {
public:
    MemorySource(const std::uint8_t* data, std::size_t size, std::size_t max_chunk = SIZE_MAX)
        : data_(data), size_(size), max_chunk_(max_chunk) {}
    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        std::size_t k = std::min({n, size_ - pos_, max_chunk_});
        std::memcpy(buf, data_ + pos_, k);
        pos_ += k;
        return k;
    }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t max_chunk_;
    std::size_t pos_ = 0;
};

class StringSink : public Sink {
public:
    void write(const std::uint8_t* data, std::size_t n) override { out.append(reinterpret_cast<const char*>(data), n); }
    std::string out;
};

// A layer held in memory: its entries in export order, each File and AlternateStream
// entry with its data.
class MemoryLayerReader : public LayerReader {
public:
    struct Item {
        LayerEntry entry;
        std::string data;
    };

    explicit MemoryLayerReader(std::vector<Item> items) : items_(std::move(items)) {}
    bool next(LayerEntry& entry) override {
        if (next_ >= items_.size()) return false;
        current_ = &items_[next_++];
        entry = current_->entry;
        pos_ = 0;
        return true;
    }
    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        if (!current_) return 0;
        std::size_t k = std::min(n, current_->data.size() - pos_);
        std::memcpy(buf, current_->data.data() + pos_, k);
        pos_ += k;
        return k;
    }

private:
    std::vector<Item> items_;
    std::size_t next_ = 0;
    const Item* current_ = nullptr;
    std::size_t pos_ = 0;
};

}  // namespace winlayer
