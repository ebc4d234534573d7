// The vmcompute backend's layer writer (import) and reader (export), the parts of the
// hcs backend that move files: REFERENCE.md section 2 describes the folders they use.
#pragma once

#include <memory>
#include <string>

#include "core/backend.hpp"
#include "core/layer.hpp"

namespace winlayer::win {

// Non-base layers (parents not empty) are staged in the legacy import folder (a
// StagingFolder beside the layer folder, see staging.hpp) and handed to
// ImportLayer at commit; base layers are written straight into the layer folder with
// BackupWrite, then ProcessBaseImage / ProcessUtilityImage run.
std::unique_ptr<LayerWriter> make_layer_writer(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents);

// Activates the layer (unpreparing it first when it is prepared), exports it with
// ExportLayer into an export StagingFolder, restores its state, and reads the folder;
// the folder is deleted when the reader is destroyed.
std::unique_ptr<LayerReader> make_layer_reader(const DriverInfo& info, const std::string& id,
                                               const LayerChain& parents);

// The file beside a layer's folders that keeps its tar-split record.
constexpr const char* kTarSplitFile = "winlayer-tar-split";

// ProcessUtilityImage rewrites these four utility VM files: the writer copies them
// (never links) and saves the imported bytes in the layer root under the second name.
constexpr const char* kBootFiles[][2] = {
    {"UtilityVM/Files/EFI/Microsoft/Boot/BCD", "bcd.bak"},
    {"UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG", "bcd.log.bak"},
    {"UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG1", "bcd.log1.bak"},
    {"UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG2", "bcd.log2.bak"},
};

// "Files/a" is under "Files"; "Files" itself is not.
inline bool under(const std::string& path, const char* prefix) {
    std::size_t n = std::char_traits<char>::length(prefix);
    return path.size() > n && path.compare(0, n, prefix) == 0 && path[n] == '/';
}

}  // namespace winlayer::win
