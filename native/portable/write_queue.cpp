#include "write_queue.hpp"

#include <algorithm>

namespace winlayer::portable {

namespace {
constexpr std::size_t kReleaseStep = std::size_t(1) << 20;
constexpr std::size_t kPoolBuffer = 4096;  // smaller buffers are not worth keeping
constexpr std::size_t kPoolSize = 64;
constexpr std::size_t kWakeOps = 64;
constexpr std::size_t kWakeBytes = std::size_t(256) << 10;
}  // namespace

WriteQueue::WriteQueue(Tree& tree, std::size_t max_bytes)
    : context_{tree, File()}, max_bytes_(max_bytes), thread_([this] { run(); }) {}

WriteQueue::~WriteQueue() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
        ops_.clear();
    }
    changed_.notify_all();
    thread_.join();
}

void WriteQueue::rethrow_locked() {
    if (error_) std::rethrow_exception(error_);
}

std::string WriteQueue::buffer(std::size_t n) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        // The smallest idle buffer that holds n, unless it would waste most of itself.
        auto best = pool_.end();
        for (auto it = pool_.begin(); it != pool_.end(); ++it)
            if (it->capacity() >= n && (best == pool_.end() || it->capacity() < best->capacity())) best = it;
        if (best != pool_.end() && best->capacity() <= std::max(4 * n, kPoolBuffer)) {
            std::string b = std::move(*best);
            *best = std::move(pool_.back());
            pool_.pop_back();
            pooled_ -= b.capacity();
            return b;
        }
    }
    std::string b;
    b.reserve(n);
    return b;
}

void WriteQueue::push(Op op, std::string data) {
    const std::size_t bytes = data.capacity();  // what it holds, not what it uses
    std::unique_lock<std::mutex> lock(mutex_);
    // One operation larger than the budget still goes through, alone.
    if (bytes_ != 0 && bytes_ + bytes > max_bytes_) {
        producer_waiting_ = true;
        changed_.notify_all();  // the worker may be waiting for a fuller batch
        changed_.wait(lock, [&] { return error_ || bytes_ == 0 || bytes_ + bytes <= max_bytes_; });
        producer_waiting_ = false;
    }
    rethrow_locked();
    ops_.push_back(Item{std::move(op), std::move(data)});
    bytes_ += bytes;
    // Wake an idle worker only for a batch worth the switch between threads.
    const bool wake = worker_idle_ && (ops_.size() >= kWakeOps || bytes_ >= kWakeBytes);
    lock.unlock();
    if (wake) changed_.notify_all();
}

void WriteQueue::drain() {
    std::unique_lock<std::mutex> lock(mutex_);
    producer_waiting_ = true;
    changed_.notify_all();
    changed_.wait(lock, [&] { return error_ || (ops_.empty() && !busy_); });
    producer_waiting_ = false;
    rethrow_locked();
}

void WriteQueue::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    std::deque<Item> batch;
    std::vector<std::string> spent;
    for (;;) {
        worker_idle_ = true;
        changed_.wait(lock, [&] { return stop_ || !ops_.empty(); });
        worker_idle_ = false;
        if (stop_) break;
        // Take everything queued at once: one wake-up per batch, not per operation.
        batch.swap(ops_);
        busy_ = true;
        lock.unlock();
        std::exception_ptr failed;
        std::size_t done = 0;
        for (auto& item : batch) {
            try {
                context_.data = &item.data;
                item.op(context_);
            } catch (...) {
                failed = std::current_exception();
            }
            context_.data = nullptr;
            done += item.data.capacity();
            if (item.data.capacity() >= kPoolBuffer) {
                item.data.clear();
                spent.push_back(std::move(item.data));
            }
            item.op = nullptr;
            if (failed) break;
            if (done >= kReleaseStep) release(done, spent);
        }
        batch.clear();
        lock.lock();
        busy_ = false;
        bytes_ -= done;
        recycle(spent);
        if (failed && !error_) {
            error_ = failed;
            ops_.clear();
            bytes_ = 0;
        }
        if (producer_waiting_ || error_) changed_.notify_all();
    }
    context_.file = File();
}

void WriteQueue::recycle(std::vector<std::string>& spent) {
    // Keep at most half the queue's budget in idle buffers, so that memory stays bounded.
    for (auto& b : spent) {
        if (pool_.size() >= kPoolSize || pooled_ + b.capacity() > max_bytes_ / 2) continue;
        pooled_ += b.capacity();
        pool_.push_back(std::move(b));
    }
    spent.clear();
}

// Gives back `done` bytes of budget (and the spent buffers) before the batch ends, so
// that a waiting producer goes on.
void WriteQueue::release(std::size_t& done, std::vector<std::string>& spent) {
    std::lock_guard<std::mutex> lock(mutex_);
    bytes_ -= done;
    done = 0;
    recycle(spent);
    if (producer_waiting_) changed_.notify_all();
}

}  // namespace winlayer::portable
