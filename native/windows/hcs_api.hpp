// A thin, typed C++ face of the vmcompute.dll layer exports (REFERENCE.md section 1):
// UTF-8 in and out, HRESULTs turned into winlayer::Error, layer descriptors built from
// folder paths, the two-call GetLayerMountPath, GetBaseImages' buffer freed, and the
// workarounds every HCS caller needs (PrepareLayer serialized, Activate/Prepare retried).
// No layer logic lives here: vmcompute_backend.cpp and the layer writer/reader use it.
#pragma once

#include <windows.h>

#include <cstdint>
#include <string>

#include "core/backend.hpp"

namespace winlayer::hcs {

// Checks once per process that vmcompute.dll loads from System32 (and keeps it loaded,
// so the delay-load import binds to that copy); throws BackendUnavailable with the fix
// otherwise. Every call below runs it first, so a missing DLL never reaches the
// delay-load helper (which would raise an SEH exception instead of an error).
void ensure_available();

// Throws for FAILED(hr) only: FACILITY_WIN32 folds to Error::win32(code), anything
// else is Error::hresult(hr). S_FALSE and other success codes pass.
void check(HRESULT hr, const char* operation, const std::string& path);

void activate_layer(const DriverInfo& info, const std::string& id);
void deactivate_layer(const DriverInfo& info, const std::string& id);
void create_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id);
void create_sandbox_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id,
                          const LayerChain& parents);
void expand_sandbox_size(const DriverInfo& info, const std::string& id, std::uint64_t size);
void destroy_layer(const DriverInfo& info, const std::string& id);
void import_layer(const DriverInfo& info, const std::string& id, const std::string& folder,
                  const LayerChain& parents);
void export_layer(const DriverInfo& info, const std::string& id, const std::string& folder,
                  const LayerChain& parents);
// The volume path of a prepared layer (with its trailing '\'), or "" when HCS has none.
std::string get_layer_mount_path(const DriverInfo& info, const std::string& id);
bool layer_exists(const DriverInfo& info, const std::string& id);
GUID name_to_guid(const std::string& name);
std::string guid_to_string(const GUID& guid);  // "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", lower case
void prepare_layer(const DriverInfo& info, const std::string& id, const LayerChain& parents);
void unprepare_layer(const DriverInfo& info, const std::string& id);
std::string get_base_images();  // the {"Images":[...]} JSON
void process_base_image(const std::string& layer_path);
void process_utility_image(const std::string& utility_vm_path);
void grant_vm_access(const std::string& vm_id, const std::string& file_path);

// The folder of layer `id` ("<home>\<id>", or `id` itself when home is empty), absolute.
std::string layer_folder(const DriverInfo& info, const std::string& id);

}  // namespace winlayer::hcs
