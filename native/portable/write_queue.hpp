// The import's disk work on a thread of its own: the tar reader (parsing, hashing) and
// the file system calls (create, write, close) then run on two cores instead of taking
// turns on one. Operations run in the order they were pushed; the memory held by queued
// operations (their buffers' capacity) and by idle buffers is bounded, so it does not
// grow with the layer.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <vector>
#include <thread>

#include "platform.hpp"

namespace winlayer::portable {

class WriteQueue {
public:
    // What an operation works on: the staging tree and the file being written.
    struct Context {
        Tree& tree;
        File file;
        const std::string* data = nullptr;  // the data pushed with the operation
    };
    using Op = std::function<void(Context&)>;

    explicit WriteQueue(Tree& tree, std::size_t max_bytes = std::size_t(4) << 20);
    // Stops the thread; operations still queued are dropped.
    ~WriteQueue();
    WriteQueue(const WriteQueue&) = delete;
    WriteQueue& operator=(const WriteQueue&) = delete;

    // Queues `op` with `data` (Context::data while it runs), waiting while the queue holds
    // too much. Rethrows the error of an earlier operation (nothing more runs then).
    void push(Op op, std::string data = {});
    // An empty buffer for `n` bytes of push's data, recycled from earlier operations when
    // one fits: no allocation (and no fresh pages to fault in) per chunk of file data.
    std::string buffer(std::size_t n);
    // Waits until every queued operation ran; rethrows the first error.
    void drain();

private:
    void run();
    void recycle(std::vector<std::string>& spent);  // mutex_ held
    void release(std::size_t& done, std::vector<std::string>& spent);
    void rethrow_locked();

    Context context_;
    std::size_t max_bytes_;
    std::mutex mutex_;
    std::condition_variable changed_;
    struct Item {
        Op op;
        std::string data;
    };
    std::deque<Item> ops_;
    std::vector<std::string> pool_;
    std::size_t pooled_ = 0;  // capacity held by pool_
    std::size_t bytes_ = 0;
    bool busy_ = false;
    bool worker_idle_ = false;
    bool producer_waiting_ = false;
    bool stop_ = false;
    std::exception_ptr error_;
    std::thread thread_;
};

}  // namespace winlayer::portable
