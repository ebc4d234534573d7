#include "hcs_api.hpp"

#include <objbase.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "backup_api.hpp"
#include "vmcompute.h"
#include "win_util.hpp"

namespace winlayer::hcs {

namespace {

std::mutex g_load_mutex;
std::atomic<bool> g_loaded{false};

// hcsshim serializes PrepareLayer process-wide: concurrent calls hit a Windows bug that
// makes them time out.
std::mutex g_prepare_mutex;

constexpr std::uint32_t kWin32Facility = 0x00070000;
constexpr HRESULT kNotReady = static_cast<HRESULT>(0x80070000u | ERROR_NOT_READY);
constexpr HRESULT kDeviceNotConnected = static_cast<HRESULT>(0x80070000u | ERROR_DEVICE_NOT_CONNECTED);

// The DriverInfo HCS takes. Layers are always named by their full path with an empty
// (not NULL) HomeDir, the form hcsshim uses today; the 2015 form (HomeDir = home, id = a
// folder name in it) addresses the same folder.
class Driver {
public:
    explicit Driver(const DriverInfo& info) {
        raw_.Flavour = static_cast<int>(info.flavour);
        raw_.HomeDir = L"";
    }
    WinlayerDriverInfo* get() { return &raw_; }

private:
    WinlayerDriverInfo raw_{};
};

// The layer's full path: `id` is a folder name in info.home, or the path itself when
// home is empty.
std::wstring wide_id(const DriverInfo& info, const std::string& id) {
    return win::hcs_path(layer_folder(info, id));
}

std::string base_name(const std::string& path) {
    std::size_t end = path.find_last_not_of("\\/");
    if (end == std::string::npos) return path;
    std::size_t start = path.find_last_of("\\/", end);
    start = start == std::string::npos ? 0 : start + 1;
    return path.substr(start, end + 1 - start);
}

// WC_LAYER_DESCRIPTORs for a parent chain, nearest parent first; NULL when empty.
class Descriptors {
public:
    explicit Descriptors(const LayerChain& parents) {
        paths_.reserve(parents.size());
        for (const auto& p : parents) paths_.push_back(win::hcs_path(p));
        for (std::size_t i = 0; i < parents.size(); ++i) {
            WinlayerLayerDescriptor d{};
            d.LayerId = name_to_guid(base_name(parents[i]));
            d.Flags = 0;
            d.Path = paths_[i].c_str();
            descriptors_.push_back(d);
        }
    }
    WinlayerLayerDescriptor* data() { return descriptors_.empty() ? nullptr : descriptors_.data(); }
    ULONG_PTR count() const { return descriptors_.size(); }

private:
    std::vector<std::wstring> paths_;
    std::vector<WinlayerLayerDescriptor> descriptors_;
};

// ActivateLayer and PrepareLayer fail transiently while a volume is still arriving.
template <class Call>
HRESULT with_retries(Call call) {
    HRESULT hr = S_OK;
    for (int attempt = 0; attempt < 5; ++attempt) {
        if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        hr = call();
        if (hr != kNotReady && hr != kDeviceNotConnected) break;
    }
    return hr;
}

}  // namespace

void ensure_available() {
    if (g_loaded.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> lock(g_load_mutex);
    if (g_loaded.load(std::memory_order_relaxed)) return;
    // Only System32: a vmcompute.dll beside the program or on PATH must never be used.
    HMODULE h = LoadLibraryExW(L"vmcompute.dll", nullptr, LOAD_LIBRARY_SEARCH_SYSTEM32);
    if (!h) {
        DWORD code = GetLastError();
        Error e(ErrorKind::BackendUnavailable,
                "the hcs backend needs vmcompute.dll (the Host Compute Service), which cannot be "
                "loaded from System32 (Win32 error " + std::to_string(code) +
                "); enable the Containers feature: Enable-WindowsOptionalFeature -Online "
                "-FeatureName Containers, then restart Windows");
        e.code = code;
        throw e;
    }
    win::install_backup_api(h);
    g_loaded.store(true, std::memory_order_release);  // the module stays loaded for the process
}

void check(HRESULT hr, const char* operation, const std::string& path) {
    if (SUCCEEDED(hr)) return;
    auto u = static_cast<std::uint32_t>(hr);
    if ((u & 0x1fff0000u) == kWin32Facility) throw Error::win32(u & 0xffffu, operation, path);
    throw Error::hresult(u, operation, path);
}

std::string layer_folder(const DriverInfo& info, const std::string& id) {
    if (id.empty()) throw Error(ErrorKind::InvalidArgument, "empty layer id");
    if (info.home.empty()) return win::narrow(win::full_path(id));
    // A folder name in the home: it must not lead anywhere else.
    if (id == "." || id == ".." || id.find_first_of("\\/:") != std::string::npos)
        throw Error(ErrorKind::InvalidArgument, "a layer id must be a folder name, not '" + id + "'");
    return win::narrow(win::join(win::full_path(info.home), id));
}

void activate_layer(const DriverInfo& info, const std::string& id) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    check(with_retries([&] { return ActivateLayer(d.get(), wid.c_str()); }), "ActivateLayer",
          layer_folder(info, id));
}

void deactivate_layer(const DriverInfo& info, const std::string& id) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    check(DeactivateLayer(d.get(), wid.c_str()), "DeactivateLayer", layer_folder(info, id));
}

void create_layer(const DriverInfo& info, const std::string& id, const std::string& parent_id) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    // The parent: a layer id in the home, or already a layer folder's path.
    std::wstring wparent;
    if (!parent_id.empty())
        wparent = parent_id.find_first_of("\\/:") == std::string::npos ? wide_id(info, parent_id)
                                                                         : win::hcs_path(parent_id);
    check(CreateLayer(d.get(), wid.c_str(), parent_id.empty() ? nullptr : wparent.c_str()), "CreateLayer",
          layer_folder(info, id));
}

// The sandbox's parents are the descriptors; like hcsshim, parentId is passed NULL
// (`parent_id` is parents.front() for the callers of the contract).
void create_sandbox_layer(const DriverInfo& info, const std::string& id, const std::string& /*parent_id*/,
                          const LayerChain& parents) {
    ensure_available();
    if (parents.empty()) throw Error(ErrorKind::InvalidArgument, "a sandbox layer needs its parent chain");
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    Descriptors layers(parents);
    check(CreateSandboxLayer(d.get(), wid.c_str(), nullptr, layers.data(), layers.count()), "CreateSandboxLayer",
          layer_folder(info, id));
}

void expand_sandbox_size(const DriverInfo& info, const std::string& id, std::uint64_t size) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    check(ExpandSandboxSize(d.get(), wid.c_str(), size), "ExpandSandboxSize", layer_folder(info, id));
}

void destroy_layer(const DriverInfo& info, const std::string& id) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    check(DestroyLayer(d.get(), wid.c_str()), "DestroyLayer", layer_folder(info, id));
}

namespace {

using TransferCall = HRESULT(WINAPI*)(WinlayerDriverInfo*, PCWSTR, PCWSTR, WinlayerLayerDescriptor*, ULONG_PTR);

// ImportLayer and ExportLayer: a layer, a folder and the parent chain.
void transfer(TransferCall call, const char* operation, const DriverInfo& info, const std::string& id,
              const std::string& folder, const LayerChain& parents) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    std::wstring wfolder = win::hcs_path(folder);
    Descriptors layers(parents);
    check(call(d.get(), wid.c_str(), wfolder.c_str(), layers.data(), layers.count()), operation,
          layer_folder(info, id));
}

}  // namespace

void import_layer(const DriverInfo& info, const std::string& id, const std::string& folder,
                  const LayerChain& parents) {
    transfer(&ImportLayer, "ImportLayer", info, id, folder, parents);
}

void export_layer(const DriverInfo& info, const std::string& id, const std::string& folder,
                  const LayerChain& parents) {
    transfer(&ExportLayer, "ExportLayer", info, id, folder, parents);
}

std::string get_layer_mount_path(const DriverInfo& info, const std::string& id) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    const std::string where = layer_folder(info, id);
    SIZE_T length = 0;
    check(GetLayerMountPath(d.get(), wid.c_str(), &length, nullptr), "GetLayerMountPath", where);
    if (length == 0) return {};
    std::wstring buffer(length, L'\0');
    check(GetLayerMountPath(d.get(), wid.c_str(), &length, buffer.data()), "GetLayerMountPath", where);
    // `length` counts the terminating NUL; the string ends at the first NUL either way.
    std::size_t end = buffer.find(L'\0');
    if (end != std::wstring::npos) buffer.resize(end);
    return win::narrow(buffer);
}

bool layer_exists(const DriverInfo& info, const std::string& id) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    BOOL exists = FALSE;
    check(LayerExists(d.get(), wid.c_str(), &exists), "LayerExists", layer_folder(info, id));
    return exists != FALSE;
}

GUID name_to_guid(const std::string& name) {
    ensure_available();
    std::wstring wname = win::widen(name);
    GUID g{};
    check(NameToGuid(wname.c_str(), &g), "NameToGuid", name);
    return g;
}

std::string guid_to_string(const GUID& g) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%08lx-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                  static_cast<unsigned long>(g.Data1), g.Data2, g.Data3, g.Data4[0], g.Data4[1], g.Data4[2],
                  g.Data4[3], g.Data4[4], g.Data4[5], g.Data4[6], g.Data4[7]);
    return buf;
}

void prepare_layer(const DriverInfo& info, const std::string& id, const LayerChain& parents) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    Descriptors layers(parents);
    std::lock_guard<std::mutex> lock(g_prepare_mutex);
    check(with_retries([&] { return PrepareLayer(d.get(), wid.c_str(), layers.data(), layers.count()); }),
          "PrepareLayer", layer_folder(info, id));
}

void unprepare_layer(const DriverInfo& info, const std::string& id) {
    ensure_available();
    Driver d(info);
    std::wstring wid = wide_id(info, id);
    check(UnprepareLayer(d.get(), wid.c_str()), "UnprepareLayer", layer_folder(info, id));
}

std::string get_base_images() {
    ensure_available();
    PWSTR json = nullptr;
    HRESULT hr = GetBaseImages(&json);
    struct Free {
        PWSTR p;
        ~Free() { CoTaskMemFree(p); }
    } owner{json};
    check(hr, "GetBaseImages", {});
    return json ? win::narrow(json, wcslen(json)) : std::string();
}

void process_base_image(const std::string& layer_path) {
    ensure_available();
    std::wstring w = win::hcs_path(layer_path);
    check(ProcessBaseImage(w.c_str()), "ProcessBaseImage", layer_path);
}

void process_utility_image(const std::string& utility_vm_path) {
    ensure_available();
    std::wstring w = win::hcs_path(utility_vm_path);
    check(ProcessUtilityImage(w.c_str()), "ProcessUtilityImage", utility_vm_path);
}

void grant_vm_access(const std::string& vm_id, const std::string& file_path) {
    ensure_available();
    std::wstring wvm = win::widen(vm_id);
    std::wstring wpath = win::hcs_path(file_path);
    check(GrantVmAccess(wvm.c_str(), wpath.c_str()), "GrantVmAccess", file_path);
}

}  // namespace winlayer::hcs
