#include "pystream.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../core/bounded_queue.hpp"
#include "../core/error.hpp"
#include "../core/file_io.hpp"

namespace winlayer::bridge {

namespace {

unsigned long g_main_thread = 0;  // ident of Python's main thread, set by bind_pystream

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

}  // namespace

const Interrupt& signal_check() {
    static const Interrupt none;
    static const Interrupt check = [] {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    };
    return PyThread_get_thread_ident() == g_main_thread ? check : none;
}

namespace {

// Producer side of a NativeStream. Small writes (a tar header, a piece of padding) are
// gathered into batches first: one lock and one wake-up of the reader per batch, not per
// write.
class QueueSink : public Sink {
public:
    explicit QueueSink(ByteQueue& queue) : queue_(queue), batch_size_(std::min(kBatch, queue.piece_size())) {}

    void write(const std::uint8_t* data, std::size_t n) override {
        if (batch_.size() + n > batch_size_) flush();
        if (n >= batch_size_) {
            if (!queue_.write(data, n)) throw closed();
            return;
        }
        batch_.insert(batch_.end(), data, data + n);
    }

    void flush() {
        if (batch_.empty()) return;
        if (!queue_.push(std::move(batch_))) throw closed();
        batch_ = ByteQueue::Piece();
        batch_.reserve(batch_size_);
    }

private:
    static constexpr std::size_t kBatch = 64 * 1024;
    static Error closed() { return Error::os(EPIPE, "write", "closed native stream"); }

    ByteQueue& queue_;
    const std::size_t batch_size_;
    ByteQueue::Piece batch_;
};

// The reading end of a ByteQueue as a Python binary file object (NativeStream, BytePipe).
class QueueReader {
public:
    explicit QueueReader(std::shared_ptr<ByteQueue> queue) : queue_(std::move(queue)) {}

    // Copies up to n bytes into dst, waiting (GIL released) for at least one unless the
    // stream has ended; `fill` keeps waiting until n bytes or the end. Rethrows the
    // producer's error once the data before it has been read.
    std::size_t pull(std::uint8_t* dst, std::size_t n, bool fill) {
        if (closed_) throw py::value_error("I/O operation on closed stream");
        const Interrupt& interrupt = signal_check();
        py::gil_scoped_release nogil;
        return queue_->read(dst, n, interrupt, fill);
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

    bool closed() const { return closed_; }

    // The file-object methods of a reader class T (a QueueReader).
    template <typename T>
    static void bind(py::class_<T>& cls) {
        cls.def("read", &T::read, py::arg("size") = -1,
                "Read up to `size` bytes (all that is left when negative); b'' at the end.")
            .def("readall", &T::readall, "Read until the end of the stream.")
            .def("readinto", &T::readinto, py::arg("buffer"),
                 "Read into a writable buffer; returns the byte count, 0 at the end.")
            .def("readable", [](const T&) { return true; })
            .def("seekable", [](const T&) { return false; })
            .def("writable", [](const T&) { return false; })
            .def("isatty", [](const T&) { return false; })
            .def("flush", [](const T&) {}, "Nothing to flush (read-only); io.BufferedReader calls it.")
            .def_property_readonly("closed", &T::closed)
            .def("__enter__", [](py::object self) { return self; })
            .def("__exit__", [](T& self, const py::args&) {
                self.close();
                return false;
            });
    }

protected:
    // Marks the reader closed and closes the queue: its producer's next write fails.
    void close_queue() {
        closed_ = true;
        queue_->close();
    }

    std::shared_ptr<ByteQueue> queue_;

private:
    bool closed_ = false;
};

// Producer thread -> ByteQueue -> Python reader.
class NativeStream : public QueueReader {
public:
    NativeStream(std::function<void(Sink&)> producer, std::size_t buffer_size)
        : QueueReader(std::make_shared<ByteQueue>(buffer_size)), producer_(std::move(producer)) {
        thread_ = std::thread([queue = queue_, producer = &producer_] {
            QueueSink sink(*queue);
            try {
                (*producer)(sink);
                sink.flush();
                queue->finish();
            } catch (...) {
                const std::exception_ptr error = rethrowable_current_exception();
                try {
                    sink.flush();  // what came before the error is still read
                } catch (...) {  // the reader closed the stream: nobody reads it
                }
                queue->finish(error);
            }
        });
    }

    ~NativeStream() { close(); }

    // Stops the producer (its next write throws), waits for its thread, and destroys it
    // with the GIL held. Idempotent.
    void close() {
        if (closed()) return;
        close_queue();
        if (thread_.joinable()) {
            py::gil_scoped_release nogil;
            thread_.join();
        }
        producer_ = nullptr;
    }

private:
    std::function<void(Sink&)> producer_;
    std::thread thread_;
};

// A Python producer -> ByteQueue -> a native (or Python) reader. See _hcs.BytePipe.
class BytePipe : public QueueReader {
public:
    explicit BytePipe(py::ssize_t capacity) : QueueReader(make_queue(capacity)) {}
    ~BytePipe() { close(); }

    // Copies `data` in pieces under the GIL (a memcpy each); waits for room with the GIL
    // released.
    void feed(const py::buffer& data) {
        py::buffer_info info = data.request();
        if (!PyBuffer_IsContiguous(static_cast<Py_buffer*>(info.view()), 'C'))
            throw py::type_error("feed() needs a contiguous buffer");
        if (ended_) throw py::value_error("feed() after the BytePipe was finished or failed");
        const auto* p = static_cast<const std::uint8_t*>(info.ptr);
        std::size_t n = static_cast<std::size_t>(info.size * info.itemsize);
        while (n > 0) {
            const std::size_t k = std::min(n, queue_->piece_size());
            ByteQueue::Piece piece(p, p + k);
            TryPush pushed = queue_->try_push(piece);
            if (pushed == TryPush::Full) {
                const Interrupt& interrupt = signal_check();
                py::gil_scoped_release nogil;
                pushed = queue_->push(std::move(piece), interrupt) ? TryPush::Pushed : TryPush::Closed;
            }
            if (pushed == TryPush::Closed) {
                PyErr_SetString(PyExc_BrokenPipeError, "the reader of the BytePipe is closed");
                throw py::error_already_set();
            }
            p += k;
            n -= k;
        }
    }

    void finish() { end(nullptr); }

    // The reader raises `exc` itself (the same object) once it has read what was fed before.
    void fail(const py::object& exc) {
        if (!PyExceptionInstance_Check(exc.ptr()))
            throw py::type_error("fail() needs an exception instance, got " + type_name(exc));
        end(std::make_exception_ptr(PythonException(exc)));
    }

    void close() {
        if (!closed()) close_queue();
    }

    std::size_t buffered() const { return queue_->buffered(); }

    const std::shared_ptr<ByteQueue>& queue() const { return queue_; }

private:
    using TryPush = BoundedQueue<ByteQueue::Piece>::TryPush;

    static std::shared_ptr<ByteQueue> make_queue(py::ssize_t capacity) {
        if (capacity <= 0) throw py::value_error("BytePipe capacity must be positive, got " + std::to_string(capacity));
        return std::make_shared<ByteQueue>(static_cast<std::size_t>(capacity));
    }

    void check_not_ended() const {
        if (ended_) throw py::value_error("the BytePipe was already finished or failed");
    }

    void end(std::exception_ptr error) {
        check_not_ended();
        ended_ = true;
        queue_->finish(std::move(error));
    }

    bool ended_ = false;  // finish() or fail() was called
};

// A BytePipe read natively: no GIL per chunk (only, on the main thread, to check for
// signals while it waits; the thread that reads is not always the one that made it).
class PipeSource : public Source {
public:
    explicit PipeSource(std::shared_ptr<ByteQueue> queue) : queue_(std::move(queue)) {}

    std::size_t read(std::uint8_t* buf, std::size_t n) override {
        const std::size_t got = queue_->read(buf, n, signal_check());
        if (got == 0 && n > 0 && queue_->closed())
            throw Error(ErrorKind::InvalidArgument, "read from a BytePipe whose reader side was closed");
        return got;
    }

private:
    std::shared_ptr<ByteQueue> queue_;
};

// `size` bytes of a file from `offset`, read by native code itself: a layer stored
// uncompressed in an archive, imported where it is (no Python thread, no pipe).
struct FileSlice {
    std::string path;
    std::uint64_t offset;
    std::uint64_t size;
};

}  // namespace

std::unique_ptr<Source> source_from_python(py::object obj, std::size_t chunk_size) {
    if (py::isinstance<FileSlice>(obj)) {
        const FileSlice& slice = obj.cast<const FileSlice&>();
        return std::make_unique<FileSource>(slice.path, slice.offset, slice.size);
    }
    if (py::isinstance<BytePipe>(obj)) {
        BytePipe& pipe = obj.cast<BytePipe&>();
        if (pipe.closed()) throw py::value_error("I/O operation on closed stream");
        return std::make_unique<PipeSource>(pipe.queue());
    }
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
    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();

    py::class_<NativeStream> stream(m, "NativeStream", "A readable binary stream filled by native code on a worker thread.");
    QueueReader::bind(stream);
    stream.def("close", &NativeStream::close, "Stop the producer and release its thread.");

    py::class_<BytePipe> pipe(m, "BytePipe",
                              "A bounded byte pipe from a Python producer thread to a reader: a readable binary "
                              "file object that native sources read without the GIL.");
    pipe.def(py::init<py::ssize_t>(), py::arg("capacity") = py::ssize_t(32) << 20)
        .def("feed", &BytePipe::feed, py::arg("data"),
             "Copy `data` in; waits (GIL released) while the pipe is full. BrokenPipeError once the reader closed.")
        .def("finish", &BytePipe::finish, "The end of the data: the reader sees EOF after what was fed.")
        .def("fail", &BytePipe::fail, py::arg("exc"), "End with an error: the reader raises `exc` after what was fed.")
        .def_property_readonly("buffered", &BytePipe::buffered, "Bytes fed that no reader has taken yet.");
    QueueReader::bind(pipe);
    pipe.def("close", &BytePipe::close, "Close the reader side: a waiting or later feed() raises BrokenPipeError.");

    py::class_<FileSlice>(m, "FileSlice",
                          "`size` bytes of the file at `path` from `offset`: a source that native code reads "
                          "itself (a file that ends sooner is an InvalidLayer).")
        .def(py::init([](const py::object& path, std::uint64_t offset, std::uint64_t size) {
                 return FileSlice{path_from_python(path), offset, size};
             }),
             py::arg("path"), py::arg("offset"), py::arg("size"))
        .def_readonly("path", &FileSlice::path)
        .def_readonly("offset", &FileSlice::offset)
        .def_readonly("size", &FileSlice::size);
}

}  // namespace winlayer::bridge
