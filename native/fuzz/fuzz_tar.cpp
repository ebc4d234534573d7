// libFuzzer target for the tar reader and tar-split: any input either fails with
// InvalidLayer or reads completely, hashes to its SHA-256, and rebuilds byte for byte
// from its tar-split record and payloads. The input is also taken as a tar-split record,
// which must be refused cleanly (StoreCorrupt) or replay (DigestMismatch at worst).
// Build and run: ci/fuzz_tar.sh.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/layer_tar.hpp"
#include "core/memory_io.hpp"
#include "core/sha256.hpp"
#include "core/tar.hpp"
#include "core/tar_split.hpp"

namespace {

using namespace winlayer;

// Payloads in the order the reader saw them; rebuild must ask for them in that order.
class OrderedStore : public PayloadStore {
public:
    std::vector<std::pair<std::string, std::string>> payloads;
    std::size_t next = 0;
    std::unique_ptr<Source> open(const std::string& name, std::uint64_t size) override {
        if (next >= payloads.size() || payloads[next].first != name || payloads[next].second.size() != size)
            std::abort();
        const std::string& data = payloads[next++].second;
        return std::make_unique<MemorySource>(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
    }
};

// Any payload a hostile record asks for: that many zero bytes.
class ZeroStore : public PayloadStore {
public:
    std::unique_ptr<Source> open(const std::string&, std::uint64_t size) override {
        zeros_.assign(static_cast<std::size_t>(size), 0);
        return std::make_unique<MemorySource>(zeros_.data(), zeros_.size());
    }

private:
    std::vector<std::uint8_t> zeros_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // Chunks of an input-dependent size, so that headers and records straddle reads.
    MemorySource source(data, size, 1 + size % 3001);
    TarSplitWriter split;
    OrderedStore store;
    // A small buffer makes the reader refill often; its minimum is one block.
    TarReader reader(source, &split, 512 + size % 2048);
    std::string diff_id;
    try {
        TarHeader h;
        bool view = false;
        while (reader.next(h)) {
            std::string payload;
            std::uint8_t buf[700];
            for (;;) {
                std::size_t n;
                if ((view = !view)) {
                    const std::uint8_t* p;
                    n = reader.read_view(p, 999);
                    payload.append(reinterpret_cast<const char*>(p), n);
                } else {
                    n = reader.read(buf, sizeof buf);
                    payload.append(reinterpret_cast<const char*>(buf), n);
                }
                if (n == 0) break;
            }
            if (payload.size() != h.size) std::abort();
            if (!payload.empty()) store.payloads.emplace_back(h.name, std::move(payload));
        }
        diff_id = reader.diff_id();
    } catch (const Error& e) {
        if (e.kind != ErrorKind::InvalidLayer || e.offset < 0 || static_cast<std::size_t>(e.offset) > size)
            std::abort();
        diff_id.clear();
    }
    if (!diff_id.empty()) {
        if (reader.offset() != size) std::abort();
        Sha256 portable(true);
        portable.update(data, size);
        if (portable.oci_digest() != diff_id) std::abort();
        StringSink rebuilt;
        rebuild_layer_tar(split.take(), store, rebuilt);
        if (rebuilt.out.size() != size || std::memcmp(rebuilt.out.data(), data, size) != 0) std::abort();
    }

    // The input as a tar-split record: it must be refused cleanly, or (when small enough
    // to replay here) rebuild or fail with a digest mismatch.
    const std::string record(reinterpret_cast<const char*>(data), size);
    try {
        if (inspect_tar_split(record).total_size <= (1u << 20)) {
            ZeroStore zeros;
            StringSink out;
            rebuild_layer_tar(record, zeros, out);
        }
    } catch (const Error& e) {
        if (e.kind != ErrorKind::StoreCorrupt && e.kind != ErrorKind::DigestMismatch) std::abort();
    }
    return 0;
}
