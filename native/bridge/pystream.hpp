// Python byte streams <-> native Source / Sink, for every binding that moves layer data.
//
// Input (Python -> native):
//
//     std::unique_ptr<Source> src = source_from_python(obj);   // GIL held here
//     {
//         py::gil_scoped_release nogil;
//         TarReader reader(*src);                               // reads without the GIL
//         ...
//     }
//
//   `obj` may be a str, bytes or os.PathLike: the file is read natively (FileSource), the GIL is
//   never needed. Or a `_hcs.BytePipe`: read natively from its queue, without the GIL (on the
//   main thread it is taken every 100 ms of waiting, to check for signals). Or any object
//   with readinto(b) (preferred) or read(n) returning bytes: the returned Source takes the
//   GIL only to pull the next chunk (1 MiB by default), so call its read() with the GIL
//   released. Exceptions raised by the Python object propagate unchanged
//   (py::error_already_set). The Source may be destroyed with or without the GIL held.
//
// Output (native -> Python), a pull stream:
//
//     return make_native_stream([reader = ...](Sink& out) { export_layer_tar(*reader, out); });
//
//   returns a `_hcs.NativeStream`: a readable binary file object (read, readinto, readall,
//   readable, seekable, writable, isatty, flush, close, closed, context manager) usable with
//   shutil.copyfileobj and io.BufferedReader. The producer runs on its own thread
//   writing into a bounded buffer; read() releases the GIL while it waits (and checks for
//   signals every 100 ms, so Ctrl-C interrupts a read stuck on a slow producer). When the
//   producer throws, read() raises that error (translated as usual) once the data written
//   before it has been read. close() (or garbage collection) while the producer runs
//   makes the producer's next Sink::write throw, then joins the thread: no thread outlives
//   the stream. The producer must not hold Python objects unless it takes the GIL to use
//   and release them; it is destroyed on the thread that closes the stream, with the GIL.
//
// Python -> native, pushed: `_hcs.BytePipe(capacity)`. A Python producer thread calls
// feed(data) (copied under the GIL; waits for room with the GIL released; BrokenPipeError
// once the reader closed), then finish() or fail(exc); the reader, native (above) or
// Python (the NativeStream file methods), gets the data, then EOF or `exc` itself.
//
// Both directions carry bytes in a ByteQueue (core/bounded_queue.hpp).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "../core/bounded_queue.hpp"
#include "../core/io.hpp"
#include "bridge.hpp"

namespace winlayer::bridge {

constexpr std::size_t kPythonChunkSize = std::size_t(1) << 20;
constexpr std::size_t kNativeStreamBuffer = std::size_t(4) << 20;

std::unique_ptr<Source> source_from_python(py::object obj,
                                           std::size_t chunk_size = kPythonChunkSize);

// str, bytes or os.PathLike -> the path as UTF-8 (os.fsdecode), for FileSource/FileSink.
std::string path_from_python(const py::handle& path);

py::object make_native_stream(std::function<void(Sink&)> producer,
                              std::size_t buffer_size = kNativeStreamBuffer);

// What a wait for a native peer runs every BoundedQueue::kPollInterval (and a long native
// call now and then): on Python's main thread, where signals are handled, a check that
// takes the GIL and raises KeyboardInterrupt (py::error_already_set) on Ctrl-C; elsewhere
// nothing (empty). Call it without the GIL.
const Interrupt& signal_check();

// Registers _hcs.NativeStream (called once from the module init).
void bind_pystream(py::module_& m);

}  // namespace winlayer::bridge
