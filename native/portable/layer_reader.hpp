// Export: LayerReaders over a stored layer (and over a sandbox's diff), and the
// PayloadStore that gives back an imported tar's payloads for the byte-exact rebuild.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../core/layer.hpp"

namespace winlayer::portable {

// One entry of an export, with where its data is.
struct ExportItem {
    LayerEntry entry;
    std::string data;         // absolute path of the data (File, AlternateStream); "" = none
    std::uint32_t group = 0;  // hard-link group: the first in export order is the File
};

// Yields `items` in canonical order (folders before their children, names in byte order
// component by component, a folder's whiteouts right after it, a file's streams right
// after the file); the first name of a hard-link group is the file, the others links to it.
std::unique_ptr<LayerReader> make_item_reader(std::vector<ExportItem> items);

// The entries of the stored layer in `layer_dir`.
std::unique_ptr<LayerReader> make_layer_reader(const std::string& layer_dir);

// The payloads of the layer's imported tar, by tar entry name.
std::unique_ptr<PayloadStore> make_payload_store(const std::string& layer_dir);

}  // namespace winlayer::portable
