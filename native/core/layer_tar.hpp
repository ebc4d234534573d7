// Layer tar <-> layer: the drivers that connect the tar codec to a LayerWriter
// (import) or a LayerReader (export), with go-winio backuptar's semantics.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "io.hpp"
#include "layer.hpp"

namespace winlayer {

struct ImportOptions {
    // "sha256:<hex>" the tar must hash to, or empty. Checked before commit: a mismatch
    // aborts the writer and throws DigestMismatch.
    std::string expected_digest;
    // Called now and then (not per entry) with the tar bytes consumed so far.
    std::function<void(std::uint64_t)> progress;
    // A hard link whose target is not in this tar goes to the writer, which checks the
    // parent layers (true), or is an InvalidLayer error (false: no parents, e.g. a base
    // layer or a listing).
    bool allow_parent_links = true;
    // Record the tar-split (CommitInfo::tar_split); a listing that keeps nothing skips it.
    bool record_tar_split = true;
    // Hash on a thread of its own (TarReader::hash_in_background), for a caller that does
    // little per byte itself (a listing).
    bool hash_in_background = false;
    // Blocks until the parent layers are committed (or throws to abort the import), for
    // a layer imported while its parent is still being written. Called at most once,
    // before the first thing that reads the parents - a hard link whose target is not in
    // this tar, an entry under UtilityVM/ (a delta layer's utility VM starts as the
    // parent's) - and before commit, so that layers commit parent first. Whiteouts do not
    // wait: they are recorded as tombstones, resolved against the parents when read.
    // Empty: the parents are committed already.
    std::function<void()> wait_for_parents;
    // Called once the tar is read and checked, right before the writer's commit: the
    // files to publish with the layer (CommitInfo::layer_files), which may depend on the
    // diffID and size it is given. Empty: none.
    std::function<std::vector<std::pair<std::string, std::string>>(const CommitInfo&)> layer_files;
};

// Reads a layer tar from `tar`, validates every entry (path rules, formats), feeds
// `writer`, computes the diffID and the tar-split record in the same pass, checks the
// expected digest and commits. On any error the writer is aborted and the error
// rethrown, with the entry name and byte offset for InvalidLayer. Errors the writer
// raises for an entry (e.g. a hard link whose target is in no parent) get the entry
// and offset filled in when they lack them.
CommitInfo import_layer_tar(Source& tar, LayerWriter& writer, const ImportOptions& options);

// import_layer_tar one entry at a time, for callers that hand entries on in batches
// (e.g. a listing): step() until it returns false, then commit(). Any error from step()
// or commit() has already aborted the writer.
class LayerTarImporter {
public:
    LayerTarImporter(Source& tar, LayerWriter& writer, const ImportOptions& options);
    ~LayerTarImporter();
    LayerTarImporter(const LayerTarImporter&) = delete;
    LayerTarImporter& operator=(const LayerTarImporter&) = delete;

    // Reads and passes on the next tar entry (with its data); false at the end.
    bool step();
    // Checks the expected digest and commits the writer. Destroying the importer
    // before commit() aborts the writer.
    CommitInfo commit();

private:
    struct State;
    std::unique_ptr<State> state_;
};

// Writes the canonical (deterministic) layer tar of `reader`'s entries to `out`.
void export_layer_tar(LayerReader& reader, Sink& out);

// Writes the original tar, byte for byte, from its tar-split record and payloads.
void rebuild_layer_tar(const std::string& tar_split, PayloadStore& payloads, Sink& out);
// The same with the record read from the start by each call of `open_record` (twice: a
// check of the whole record, then the rebuild), never held whole.
void rebuild_layer_tar(const std::function<std::unique_ptr<Source>()>& open_record, PayloadStore& payloads,
                       Sink& out);

}  // namespace winlayer
