// The one bounded queue that carries data between two threads: a producer pushes, a
// consumer pops, and either side may end it. The producer ends it with finish(error): the
// consumer takes the items pushed before, then pop() reports the end and
// raise_if_failed() rethrows `error` (each time it is called). The consumer ends it with
// close(): queued items are dropped and push() returns false from then on, waking a
// producer that waits for room.
//
// BoundedQueue<T> bounds the total weight of the queued items (1 per item unless a weigh
// function says otherwise). ByteQueue is a byte stream over it, bounded by bytes.
//
// Blocking calls take an optional `interrupt`: called every kPollInterval while they wait,
// without the lock, it throws to abandon the wait (e.g. to raise KeyboardInterrupt).
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace winlayer {

using Interrupt = std::function<void()>;

template <typename T>
class BoundedQueue {
public:
    using Weigh = std::size_t (*)(const T&);
    static constexpr std::chrono::milliseconds kPollInterval{100};

    explicit BoundedQueue(std::size_t capacity, Weigh weigh = [](const T&) -> std::size_t { return 1; })
        : capacity_(std::max<std::size_t>(capacity, 1)), weigh_(weigh) {}

    std::size_t capacity() const { return capacity_; }

    // Producer: queues `item` once it fits (an item heavier than the capacity waits for an
    // empty queue). false when the consumer has closed the queue: the item is dropped.
    bool push(T item, const Interrupt& interrupt = nullptr) {
        const std::size_t w = weigh_(item);
        std::unique_lock<std::mutex> lock(mutex_);
        wait(lock, interrupt, [&] { return closed_ || fits(w); });
        if (closed_) return false;
        put(std::move(item), w);
        return true;
    }

    enum class TryPush { Pushed, Full, Closed };
    // Producer: push() without waiting; `item` is moved from only when Pushed.
    TryPush try_push(T& item) {
        const std::size_t w = weigh_(item);
        std::lock_guard<std::mutex> lock(mutex_);
        if (closed_) return TryPush::Closed;
        if (!fits(w)) return TryPush::Full;
        put(std::move(item), w);
        return TryPush::Pushed;
    }

    // Producer: no more items; `error`, if any, is what raise_if_failed() rethrows.
    // Only the first end counts.
    void finish(std::exception_ptr error = nullptr) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (finished_) return;
            finished_ = true;
            error_ = std::move(error);
        }
        changed_.notify_all();
    }

    // Consumer: the next item, waiting for one; nullopt at the end or once closed.
    // Never throws the producer's error: see raise_if_failed().
    std::optional<T> pop(const Interrupt& interrupt = nullptr) {
        std::unique_lock<std::mutex> lock(mutex_);
        wait(lock, interrupt, [&] { return closed_ || finished_ || !items_.empty(); });
        return take(lock);
    }

    // Consumer: pop() without waiting: nullopt when no item is queued (the end included;
    // the next pop() reports it).
    std::optional<T> try_pop() {
        std::unique_lock<std::mutex> lock(mutex_);
        if (closed_ || items_.empty()) return std::nullopt;
        return take(lock);
    }

    // Consumer: rethrows the producer's error once the queue has ended with one and its
    // items are taken.
    void raise_if_failed() const {
        std::exception_ptr error;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (closed_ || !items_.empty()) return;
            error = error_;
        }
        if (error) std::rethrow_exception(error);
    }

    // Consumer: drops the queued items; push() returns false from now on. Idempotent.
    void close() {
        std::deque<T> dropped;
        std::exception_ptr error;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            closed_ = true;
            dropped.swap(items_);
            error = std::move(error_);
            weight_ = 0;
        }
        changed_.notify_all();
        // `dropped` and `error` are destroyed here, outside the lock: an error may hold a
        // Python exception, whose release takes the GIL.
    }

    bool closed() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return closed_;
    }
    // The weight queued now.
    std::size_t weight() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return weight_;
    }

private:
    bool fits(std::size_t w) const { return items_.empty() || weight_ + w <= capacity_; }

    void put(T&& item, std::size_t w) {
        items_.push_back(std::move(item));
        weight_ += w;
        changed_.notify_all();
    }

    std::optional<T> take(std::unique_lock<std::mutex>& lock) {
        if (closed_ || items_.empty()) return std::nullopt;
        std::optional<T> item(std::move(items_.front()));
        items_.pop_front();
        weight_ -= weigh_(*item);
        lock.unlock();
        changed_.notify_all();
        return item;
    }

    template <typename Ready>
    void wait(std::unique_lock<std::mutex>& lock, const Interrupt& interrupt, Ready ready) {
        if (!interrupt) return changed_.wait(lock, ready);
        while (!changed_.wait_for(lock, kPollInterval, ready)) {
            lock.unlock();
            interrupt();
            lock.lock();
        }
    }

    const std::size_t capacity_;
    const Weigh weigh_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<T> items_;
    std::size_t weight_ = 0;
    bool finished_ = false;
    bool closed_ = false;
    std::exception_ptr error_;
};

// A byte stream over BoundedQueue: pieces of at most piece_size() bytes, at most
// capacity() bytes queued. The consumer's partly read piece is kept here, so readers on
// several threads see one stream.
class ByteQueue {
public:
    using Piece = std::vector<std::uint8_t>;
    static constexpr std::size_t kMaxPiece = std::size_t(1) << 20;

    explicit ByteQueue(std::size_t capacity) : queue_(capacity, [](const Piece& p) { return p.size(); }) {}

    std::size_t capacity() const { return queue_.capacity(); }
    std::size_t piece_size() const { return std::min(queue_.capacity(), kMaxPiece); }
    // Bytes queued that no reader has taken yet (what bounds the producer).
    std::size_t buffered() const { return queue_.weight(); }

    // Producer: queues a piece (at most piece_size() bytes); false when closed.
    bool push(Piece piece, const Interrupt& interrupt = nullptr) {
        return piece.empty() || queue_.push(std::move(piece), interrupt);
    }
    BoundedQueue<Piece>::TryPush try_push(Piece& piece) {
        if (piece.empty()) return BoundedQueue<Piece>::TryPush::Pushed;
        return queue_.try_push(piece);
    }
    // Producer: copies n bytes in pieces; false when closed.
    bool write(const std::uint8_t* data, std::size_t n, const Interrupt& interrupt = nullptr) {
        while (n > 0) {
            const std::size_t k = std::min(n, piece_size());
            if (!push(Piece(data, data + k), interrupt)) return false;
            data += k;
            n -= k;
        }
        return true;
    }
    void finish(std::exception_ptr error = nullptr) { queue_.finish(std::move(error)); }

    // Consumer: copies up to n bytes, waiting while none is there (with `fill`, until n
    // bytes or the end). 0 at the end or once closed (ask closed() which); when the
    // producer failed, its error is rethrown instead of the end, after the bytes before it.
    std::size_t read(std::uint8_t* dst, std::size_t n, const Interrupt& interrupt = nullptr, bool fill = false) {
        std::lock_guard<std::mutex> lock(reader_mutex_);
        if (queue_.closed()) return 0;
        std::size_t got = 0;
        while (got < n) {
            if (pos_ == current_.size()) {
                std::optional<Piece> next = got == 0 || fill ? queue_.pop(interrupt) : queue_.try_pop();
                if (!next) break;
                current_ = std::move(*next);
                pos_ = 0;
            }
            const std::size_t k = std::min(n - got, current_.size() - pos_);
            std::memcpy(dst + got, current_.data() + pos_, k);
            pos_ += k;
            got += k;
        }
        if (got == 0 && n > 0) queue_.raise_if_failed();
        return got;
    }
    // Consumer: the queue's close(); a partly read piece is no longer read. It does not
    // take the reader's lock: a reader may hold it while its interrupt waits for the GIL
    // that the closing thread holds.
    void close() { queue_.close(); }
    bool closed() const { return queue_.closed(); }

private:
    BoundedQueue<Piece> queue_;
    mutable std::mutex reader_mutex_;
    Piece current_;
    std::size_t pos_ = 0;
};

}  // namespace winlayer
