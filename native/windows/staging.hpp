// The hcs backend's work folders: `.winlayer-import-<layer>-<hex>` (the legacy import
// folder ImportLayer reads) and `.winlayer-export-<layer>-<hex>` (what ExportLayer
// writes), beside the layer folder, so on the same volume as the layers and never in
// %TEMP%. The leading '.' keeps them out of the driver's layer listing.
//
// Each is guarded by `<folder>.lock`, opened exclusively and delete-on-close while the
// folder is in use: when the process dies, the lock vanishes with it, and sweep() can
// tell a leftover (no lock) from a folder another process is still using (locked).
#pragma once

#include <string>
#include <vector>

#include "win_util.hpp"

namespace winlayer::win {

class StagingFolder {
public:
    // `kind` is "import" or "export"; `layer_folder` the layer the folder serves.
    StagingFolder(const std::string& layer_folder, const char* kind);
    ~StagingFolder();  // removes the folder (best effort), then releases the lock
    StagingFolder(const StagingFolder&) = delete;
    StagingFolder& operator=(const StagingFolder&) = delete;

    const std::wstring& path() const { return path_; }  // `\\?\` form
    // Removes the folder now, reporting errors.
    void remove();

private:
    Handle lock_;
    std::wstring path_;
    bool removed_ = false;
};

// Removes the work folders in `home` whose lock is gone (their process died); returns
// their names. Folders in use by a live process are left alone.
std::vector<std::string> sweep_staging(const std::string& home);

}  // namespace winlayer::win
