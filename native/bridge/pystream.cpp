#include "pystream.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/file_io.hpp"

namespace winlayer::bridge {

namespace {

std::string type_name(const py::handle& obj) {
    return py::str(py::type::handle_of(obj).attr("__name__"));
}

Error non_blocking(const char* call) {
    return Error(ErrorKind::InvalidArgument,
                 std::string(call) + " returned None (non-blocking streams are not supported)");
}

// A Python binary stream as a Source. read() is called without the GIL; the GIL is taken
// only around the Python call that pulls a chunk.
class PythonSource : public Source {
public:
    PythonSource(py::object stream, std::size_t chunk_size)
        : stream_(std::move(stream)), chunk_(std::max<std::size_t>(chunk_size, 1)) {
        if (py::hasattr(stream_, "readinto"))
            readinto_ = stream_.attr("readinto");
        else
            read_ = stream_.attr("read");
    }

    ~PythonSource() override {
        py::gil_scoped_acquire gil;
        readinto_ = py::object();
        read_ = py::object();
        stream_ = py::object();
    }

    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        if (n == 0) return 0;
        if (pos_ == end_) {
            if (eof_) return 0;
            if (n >= chunk_) return pull(buf, n);
            if (!buffer_) buffer_.reset(new std::uint8_t[chunk_]);
            pos_ = 0;
            end_ = pull(buffer_.get(), chunk_);
            if (end_ == 0) return 0;
        }
        const std::size_t k = std::min(n, end_ - pos_);
        std::memcpy(buf, buffer_.get() + pos_, k);
        pos_ += k;
        return k;
    }

private:
    std::size_t pull(std::uint8_t* dst, std::size_t n) {
        py::gil_scoped_acquire gil;
        std::size_t got;
        if (readinto_) {
            auto view = py::memoryview::from_memory(dst, static_cast<py::ssize_t>(n), false);
            py::object r = readinto_(view);
            // The stream must not keep a view of native memory past this call.
            view.attr("release")();
            if (r.is_none()) throw non_blocking("readinto()");
            const auto count = r.cast<py::ssize_t>();
            if (count < 0 || static_cast<std::size_t>(count) > n)
                throw Error(ErrorKind::InvalidArgument,
                            "readinto() returned an invalid byte count " + std::to_string(count));
            got = static_cast<std::size_t>(count);
        } else {
            py::object r = read_(n);
            if (r.is_none()) throw non_blocking("read()");
            if (!PyBytes_Check(r.ptr()) && !PyByteArray_Check(r.ptr()) && !PyMemoryView_Check(r.ptr()))
                throw py::type_error("read() must return bytes, got " + type_name(r));
            py::buffer_info info = py::buffer(r).request();
            got = static_cast<std::size_t>(info.size * info.itemsize);
            if (got > n) throw Error(ErrorKind::InvalidArgument, "read() returned more bytes than asked for");
            std::memcpy(dst, info.ptr, got);
        }
        if (got == 0) eof_ = true;
        return got;
    }

    py::object stream_, readinto_, read_;
    std::size_t chunk_;
    std::unique_ptr<std::uint8_t[]> buffer_;
    std::size_t pos_ = 0, end_ = 0;
    bool eof_ = false;
};

constexpr std::chrono::milliseconds kSignalCheckInterval{100};

// Producer thread -> bounded ring buffer -> Python reader.
struct StreamState {
    explicit StreamState(std::size_t capacity) : ring(std::max<std::size_t>(capacity, 1)) {}

    std::mutex mutex;
    std::condition_variable changed;
    std::vector<std::uint8_t> ring;
    std::size_t head = 0;  // next byte to read
    std::size_t size = 0;  // bytes buffered
    bool done = false;     // the producer returned or threw
    bool closed = false;   // the reader closed the stream
    std::exception_ptr error;
};

// Small writes (a tar header, a piece of padding) are gathered into batches first: one
// lock and one wake-up of the reader per batch, not per write.
class RingSink : public Sink {
public:
    explicit RingSink(StreamState& state) : s_(state) {}

    void write(const std::uint8_t* data, std::size_t n) override {
        if (batch_.size() + n > kBatch) flush();
        if (n >= kBatch) return put(data, n);
        batch_.insert(batch_.end(), data, data + n);
    }

    void flush() {
        if (batch_.empty()) return;
        put(batch_.data(), batch_.size());
        batch_.clear();
    }

private:
    static constexpr std::size_t kBatch = 64 * 1024;

    void put(const std::uint8_t* data, std::size_t n) {
        std::unique_lock<std::mutex> lock(s_.mutex);
        const std::size_t cap = s_.ring.size();
        while (n > 0) {
            s_.changed.wait(lock, [&] { return s_.closed || s_.size < cap; });
            if (s_.closed) throw Error::os(EPIPE, "write", "closed native stream");
            const std::size_t tail = (s_.head + s_.size) % cap;
            const std::size_t k = std::min({n, cap - s_.size, cap - tail});
            std::memcpy(s_.ring.data() + tail, data, k);
            s_.size += k;
            data += k;
            n -= k;
            s_.changed.notify_all();
        }
    }

    StreamState& s_;
    std::vector<std::uint8_t> batch_;
};

class NativeStream {
public:
    NativeStream(std::function<void(Sink&)> producer, std::size_t buffer_size)
        : state_(std::make_shared<StreamState>(buffer_size)), producer_(std::move(producer)) {
        thread_ = std::thread([state = state_, producer = &producer_] {
            RingSink sink(*state);
            std::exception_ptr error;
            try {
                (*producer)(sink);
                sink.flush();
            } catch (...) {
                error = std::current_exception();
                try {
                    sink.flush();  // what came before the error is still read
                } catch (...) {  // the reader closed the stream: nobody reads it
                }
            }
            std::lock_guard<std::mutex> lock(state->mutex);
            state->error = std::move(error);
            state->done = true;
            state->changed.notify_all();
        });
    }

    ~NativeStream() { close(); }

    // Copies up to n bytes into dst, waiting (GIL released) for at least one unless the
    // stream has ended; `fill` keeps waiting until n bytes or the end. Rethrows the
    // producer's error once the data before it has been read.
    std::size_t pull(std::uint8_t* dst, std::size_t n, bool fill) {
        if (closed_) throw py::value_error("I/O operation on closed stream");
        std::size_t got = 0;
        std::exception_ptr error;
        for (;;) {
            bool ended = false, timed_out = false;
            {
                py::gil_scoped_release nogil;
                std::unique_lock<std::mutex> lock(state_->mutex);
                StreamState& s = *state_;
                const std::size_t cap = s.ring.size();
                if (s.changed.wait_for(lock, kSignalCheckInterval, [&] { return s.size > 0 || s.done; })) {
                    while (got < n && s.size > 0) {
                        const std::size_t k = std::min({n - got, s.size, cap - s.head});
                        std::memcpy(dst + got, s.ring.data() + s.head, k);
                        s.head = (s.head + k) % cap;
                        s.size -= k;
                        got += k;
                    }
                    s.changed.notify_all();
                    if (s.size == 0 && s.done) {
                        ended = true;
                        error = s.error;
                    }
                } else {
                    timed_out = true;
                }
            }
            if (ended || got == n || (got > 0 && !fill)) break;
            // A slow producer must not make the reader deaf to Ctrl-C.
            if (timed_out && PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
        if (got == 0 && error) std::rethrow_exception(error);
        return got;
    }

    py::bytes read(py::ssize_t size) {
        if (size < 0) return readall();
        PyObject* raw = PyBytes_FromStringAndSize(nullptr, size);
        if (!raw) throw py::error_already_set();
        py::bytes out = py::reinterpret_steal<py::bytes>(raw);
        const std::size_t got = pull(reinterpret_cast<std::uint8_t*>(PyBytes_AS_STRING(raw)),
                                     static_cast<std::size_t>(size), true);
        if (got != static_cast<std::size_t>(size)) {
            PyObject* p = out.release().ptr();
            if (_PyBytes_Resize(&p, static_cast<py::ssize_t>(got)) != 0) throw py::error_already_set();
            out = py::reinterpret_steal<py::bytes>(p);
        }
        return out;
    }

    py::bytes readall() {
        std::string all;
        std::vector<std::uint8_t> chunk(kPythonChunkSize);
        // Until pull() returns 0: only then has the producer's error, if any, been raised.
        while (const std::size_t got = pull(chunk.data(), chunk.size(), true))
            all.append(reinterpret_cast<const char*>(chunk.data()), got);
        return py::bytes(all);
    }

    std::size_t readinto(py::buffer buffer) {
        py::buffer_info info = buffer.request(true);
        if (info.readonly) throw py::type_error("readinto() needs a writable buffer");
        if (!PyBuffer_IsContiguous(static_cast<Py_buffer*>(info.view()), 'C'))
            throw py::type_error("readinto() needs a contiguous buffer");
        const auto n = static_cast<std::size_t>(info.size * info.itemsize);
        if (n == 0) return 0;
        return pull(static_cast<std::uint8_t*>(info.ptr), n, false);
    }

    // Stops the producer (its next write throws), waits for its thread, and destroys it
    // with the GIL held. Idempotent.
    void close() {
        if (closed_) return;
        closed_ = true;
        {
            std::lock_guard<std::mutex> lock(state_->mutex);
            state_->closed = true;
            state_->changed.notify_all();
        }
        if (thread_.joinable()) {
            py::gil_scoped_release nogil;
            thread_.join();
        }
        producer_ = nullptr;
        state_->error = nullptr;
    }

    bool closed() const { return closed_; }

private:
    std::shared_ptr<StreamState> state_;
    std::function<void(Sink&)> producer_;
    std::thread thread_;
    bool closed_ = false;
};

}  // namespace

std::unique_ptr<Source> source_from_python(py::object obj, std::size_t chunk_size) {
    if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj) || py::hasattr(obj, "__fspath__"))
        return std::make_unique<FileSource>(path_from_python(obj));
    if (py::hasattr(obj, "readinto") || py::hasattr(obj, "read"))
        return std::make_unique<PythonSource>(std::move(obj), chunk_size);
    throw py::type_error("expected a path or a binary file object with readinto() or read(), got " +
                         type_name(obj));
}

std::string path_from_python(const py::handle& path) {
    py::module_ os = py::module_::import("os");
    return os.attr("fsdecode")(os.attr("fspath")(path)).cast<std::string>();
}

py::object make_native_stream(std::function<void(Sink&)> producer, std::size_t buffer_size) {
    return py::cast(std::make_unique<NativeStream>(std::move(producer), buffer_size));
}

void bind_pystream(py::module_& m) {
    py::class_<NativeStream>(m, "NativeStream",
                             "A readable binary stream filled by native code on a worker thread.")
        .def("read", &NativeStream::read, py::arg("size") = -1,
             "Read up to `size` bytes (all that is left when negative); b'' at the end.")
        .def("readall", &NativeStream::readall, "Read until the end of the stream.")
        .def("readinto", &NativeStream::readinto, py::arg("buffer"),
             "Read into a writable buffer; returns the byte count, 0 at the end.")
        .def("readable", [](const NativeStream&) { return true; })
        .def("seekable", [](const NativeStream&) { return false; })
        .def("writable", [](const NativeStream&) { return false; })
        .def("isatty", [](const NativeStream&) { return false; })
        .def("flush", [](const NativeStream&) {}, "Nothing to flush (read-only); io.BufferedReader calls it.")
        .def("close", &NativeStream::close, "Stop the producer and release its thread.")
        .def_property_readonly("closed", &NativeStream::closed)
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](NativeStream& self, const py::args&) {
            self.close();
            return false;
        });
}

}  // namespace winlayer::bridge
