// The merged file system of a chain of layers as one layer (what `docker export` gives
// for a container on the chain), read from the layers' own LayerReaders, so that it works
// on every backend.
//
// Layer 0 is the nearest (top) one. Under Files/ the merge follows the layer model, as a
// sandbox view shows it: the nearest layer's version of a path wins (names compared with
// ntfs_fold, the nearest spelling kept for every folder), a whiteout hides the path and
// everything below it in farther layers, a nearer non-folder hides a farther folder and
// its contents, and folders merge (the nearest folder entry gives the metadata; a folder a
// nearer layer holds only implicitly takes the metadata of the nearest entry for it).
// Opaque markers (`.wh..opq` tombstones) hide nothing, as in the layer model. Hives/ and
// UtilityVM/ are not merged: each is taken whole from the nearest layer that has entries
// under it (a base layer's hives and utility VM; a layer that changes the utility VM holds
// all of it).
//
// The result has no whiteouts. Hard links keep pointing at the same file: the surviving
// names of one file (a group in one layer, plus links of nearer layers to it) form one
// group whose first name in canonical order carries the data and the file's streams, the
// others link to it, so that no link names a target that is absent or another file.
// Entries come in canonical export order, so a chain of one layer gives that layer's
// entries exactly (its whiteouts aside).
//
// Memory holds the names (a node per merged name, and the sort key of every entry) but
// no data: the construction reads each layer's entries once, reading no data; the entries
// are then pulled from the layers' readers (opened again when a name's order differs
// between layers, which only respelled names cause).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "layer.hpp"

namespace winlayer {

// Opens layer `i` of the chain (0 = nearest) for reading; called again whenever the merge
// needs to go back in that layer, so it must give the same entries each time.
using LayerOpener = std::function<std::unique_ptr<LayerReader>(std::size_t i)>;

// A reader of the chain's merged layer (see above). The construction reads every layer's
// entries once; a hard link whose target no layer below it holds is InvalidLayer.
std::unique_ptr<LayerReader> merged_layer_reader(std::size_t layers, LayerOpener open);

}  // namespace winlayer
