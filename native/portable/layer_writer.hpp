// Import: the LayerWriter that turns a layer tar's entries into a portable layer folder.
#pragma once

#include <memory>

#include "../core/backend.hpp"
#include "store.hpp"

namespace winlayer::portable {

// Writes into a staging folder beside the layer and publishes it with an atomic rename
// on commit; abort, destruction without commit, or a crash leave no layer (the next
// sweep removes the staging folder). Hard links to a parent layer's file become a copy
// here (reflinked where the filesystem can) recorded as a link; whiteouts become tombstones.
std::unique_ptr<LayerWriter> make_layer_writer(const LayerRef& ref, const LayerChain& parents);

// Whether an existing layer folder may be replaced by an import: a layer made by
// create_layer that has no content yet.
bool is_empty_created_layer(const std::string& layer_dir);

}  // namespace winlayer::portable
