// vmcompute.dll look-alike for the Wine tests: the layer exports of REFERENCE.md
// section 1, with the declarations (and so the ABI) of native/windows/vmcompute.h,
// implemented by the portable backend. ImportLayer/ExportLayer speak the legacy staging
// folder format (staging_folder.cpp). A layer folder the caller wrote in place (the base
// writer's, before ProcessBaseImage; one holding a cloned UtilityVM, before ImportLayer)
// becomes a portable layer at that call (`adopt`); ProcessUtilityImage rewrites the boot
// files and records the UtilityVM. Test-only; never shipped.
//
// Test controls:
//   HCS_EMULATOR_FAIL=<Export>:<hresult>[:<times>][,...]   e.g. PrepareLayer:0x80070015:2
//     makes the named export return <hresult> (the first <times> calls, or every call)
//     without doing anything; re-read at every call, counts restart when it changes.
//   HcsEmulatorCallCount(L"PrepareLayer") -> how many times the export was called (the
//     Backup API emulation of backup_emulation.cpp counts the backend's calls here too;
//     the emulator's own reads and writes through it are not counted).
//   HcsEmulatorReset() -> zeroes the counts.
#define WINLAYER_VMCOMPUTE_EXPORTS
#include "windows/vmcompute.h"

#include <objbase.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "call_count.hpp"
#include "core/error.hpp"
#include "portable/metadata.hpp"
#include "staging_folder.hpp"
#include "windows/win_util.hpp"

using winlayer::Error;
using winlayer::ErrorKind;
using winlayer::LayerChain;
namespace win = winlayer::win;

namespace {

std::mutex g_mutex;
std::map<std::string, long> g_calls;
std::wstring g_fail_spec;
std::map<std::string, std::pair<HRESULT, long>> g_failures;  // export -> hresult, calls left (-1: all)

std::string utf8(const wchar_t* w) { return w ? win::narrow(w, wcslen(w)) : std::string(); }

// Paths reach the portable backend without the `\\?\` prefix it adds itself.
std::string plain_path(const wchar_t* w) {
    std::string s = utf8(w);
    if (s.rfind("\\\\?\\UNC\\", 0) == 0) return "\\\\" + s.substr(8);
    if (s.rfind("\\\\?\\", 0) == 0) return s.substr(4);
    return s;
}

winlayer::DriverInfo driver(const WinlayerDriverInfo* info) {
    if (!info) throw Error(ErrorKind::InvalidArgument, "DriverInfo is NULL");
    winlayer::DriverInfo d;
    d.flavour = static_cast<winlayer::Flavour>(info->Flavour);
    d.home = plain_path(info->HomeDir);
    return d;
}

std::string layer_id(const WinlayerDriverInfo* info, PCWSTR id) {
    if (!id) throw Error(ErrorKind::InvalidArgument, "layer id is NULL");
    return info && info->HomeDir && *info->HomeDir ? utf8(id) : plain_path(id);
}

winlayer::LayerChain chain(const WinlayerLayerDescriptor* layers, ULONG_PTR count) {
    if (count && !layers) throw Error(ErrorKind::InvalidArgument, "descriptor count without descriptors");
    if (!count && layers) throw Error(ErrorKind::InvalidArgument, "descriptors passed for an empty chain (HCS takes NULL)");
    winlayer::LayerChain out;
    for (ULONG_PTR i = 0; i < count; ++i) out.push_back(plain_path(layers[i].Path));
    return out;
}

// The portable backend behind every export; GetBaseImages lists the folder named by
// HCS_EMULATOR_BASE_IMAGES.
winlayer::Backend& backend() {
    static std::unique_ptr<winlayer::Backend> b = [] {
        wchar_t buf[4096];
        DWORD n = GetEnvironmentVariableW(L"HCS_EMULATOR_BASE_IMAGES", buf, 4096);
        return winlayer::make_portable_backend(n && n < 4096 ? plain_path(buf) : std::string());
    }();
    return *b;
}

HRESULT from_win32(std::uint32_t code) { return static_cast<HRESULT>(0x80070000u | (code & 0xffff)); }

HRESULT from_errno(std::uint32_t e) {
    switch (e) {
    case ENOENT: return from_win32(ERROR_PATH_NOT_FOUND);
    case EEXIST: return from_win32(ERROR_ALREADY_EXISTS);
    case EACCES:
    case EPERM: return from_win32(ERROR_ACCESS_DENIED);
    case ENOTEMPTY: return from_win32(ERROR_DIR_NOT_EMPTY);
    case EBUSY: return from_win32(ERROR_BUSY);
    case ENOSPC: return from_win32(ERROR_DISK_FULL);
    case EINVAL: return E_INVALIDARG;
    default: return E_FAIL;
    }
}

// What HCS would answer for the failure the portable backend reported.
HRESULT to_hresult(const Error& e) {
    switch (e.kind) {
    case ErrorKind::Win32: return from_win32(e.code);
    case ErrorKind::Hresult: return static_cast<HRESULT>(e.code);
    case ErrorKind::Os: return from_errno(e.code);
    case ErrorKind::LayerNotFound: return from_win32(ERROR_PATH_NOT_FOUND);
    case ErrorKind::LayerExists: return from_win32(ERROR_ALREADY_EXISTS);
    case ErrorKind::LayerInUse: return from_win32(ERROR_BUSY);
    case ErrorKind::InvalidLayer: return static_cast<HRESULT>(0x80370112u);  // HCS_E_INVALID_LAYER
    case ErrorKind::InvalidArgument: return E_INVALIDARG;
    default: return E_FAIL;
    }
}

void parse_failures(const std::wstring& spec) {
    g_failures.clear();
    std::string s = utf8(spec.c_str());
    std::size_t pos = 0;
    while (pos < s.size()) {
        std::size_t end = s.find(',', pos);
        if (end == std::string::npos) end = s.size();
        std::string item = s.substr(pos, end - pos);
        pos = end + 1;
        std::size_t c1 = item.find(':');
        if (c1 == std::string::npos) continue;
        std::size_t c2 = item.find(':', c1 + 1);
        HRESULT hr = static_cast<HRESULT>(std::strtoul(item.substr(c1 + 1, c2 - c1 - 1).c_str(), nullptr, 0));
        long times = c2 == std::string::npos ? -1 : std::strtol(item.c_str() + c2 + 1, nullptr, 10);
        g_failures[item.substr(0, c1)] = {hr, times};
    }
}

// Counts the call and returns the failure the test asked for, or S_OK.
HRESULT enter(const char* name) {
    std::lock_guard<std::mutex> lock(g_mutex);
    ++g_calls[name];
    wchar_t buf[1024];
    DWORD n = GetEnvironmentVariableW(L"HCS_EMULATOR_FAIL", buf, 1024);
    std::wstring spec = n && n < 1024 ? std::wstring(buf, n) : std::wstring();
    if (spec != g_fail_spec) {
        g_fail_spec = spec;
        parse_failures(spec);
    }
    auto it = g_failures.find(name);
    if (it == g_failures.end() || it->second.second == 0) return S_OK;
    if (it->second.second > 0) --it->second.second;
    return it->second.first;
}

// An injected success code (S_FALSE) is returned after doing the work.
template <class Body>
HRESULT run(const char* name, Body body) {
    HRESULT injected = enter(name);
    if (FAILED(injected)) return injected;
    try {
        body();
        return injected;
    } catch (const Error& e) {
        if (GetEnvironmentVariableW(L"HCS_EMULATOR_TRACE", nullptr, 0)) std::fprintf(stderr, "%s: %s\n", name, e.what());
        return to_hresult(e);
    } catch (const std::bad_alloc&) {
        return E_OUTOFMEMORY;
    } catch (...) {
        return E_FAIL;
    }
}

bool parse_guid(const std::string& s, GUID& g) {
    unsigned long d1 = 0;
    unsigned d2 = 0, d3 = 0, b[8] = {};
    if (std::sscanf(s.c_str(), "%8lx-%4x-%4x-%2x%2x-%2x%2x%2x%2x%2x%2x", &d1, &d2, &d3, &b[0], &b[1], &b[2], &b[3],
                    &b[4], &b[5], &b[6], &b[7]) != 11)
        return false;
    g.Data1 = d1;
    g.Data2 = static_cast<unsigned short>(d2);
    g.Data3 = static_cast<unsigned short>(d3);
    for (int i = 0; i < 8; ++i) g.Data4[i] = static_cast<unsigned char>(b[i]);
    return true;
}

std::string folder_of(const winlayer::DriverInfo& d, const std::string& lid) {
    return d.home.empty() ? lid : d.home + "\\" + lid;
}

// A layer folder someone wrote in place (the base writer's, or one holding the UtilityVM
// hcsshim clones before ImportLayer) has none of the portable backend's metadata yet.
bool written_in_place(const std::string& folder) {
    std::wstring w = win::long_path(folder);
    DWORD a = GetFileAttributesW(w.c_str());
    if (a == INVALID_FILE_ATTRIBUTES || !(a & FILE_ATTRIBUTE_DIRECTORY)) return false;
    return GetFileAttributesW(win::join(w, winlayer::portable::kMetaFileName).c_str()) == INVALID_FILE_ATTRIBUTES;
}

// Makes the folder `folder`, written in place, a layer of the portable backend (the layer
// HCS keeps): the folder moves aside, `feed` gives its content to a writer of the layer
// at the same path, then what else the folder held (the caller's files, the UtilityVM
// that ProcessUtilityImage records) moves back. On failure the folder is put back as it was.
void adopt(const std::string& folder, const LayerChain& parents,
           const std::function<void(const std::wstring& aside, winlayer::LayerWriter&)>& feed) {
    std::wstring target = win::long_path(folder);
    std::size_t cut = target.find_last_of(L'\\');
    std::wstring aside = target.substr(0, cut) + L"\\.hcs-emulator-written-" + win::widen(win::random_suffix());
    if (!MoveFileExW(target.c_str(), aside.c_str(), 0)) win::throw_last("MoveFileExW", target);
    try {
        auto writer = backend().import_writer(winlayer::DriverInfo{winlayer::Flavour::Filter, ""}, folder, parents);
        feed(aside, *writer);
        WIN32_FIND_DATAW fd;
        HANDLE f = FindFirstFileW((aside + L"\\*").c_str(), &fd);
        if (f == INVALID_HANDLE_VALUE) win::throw_last("FindFirstFileW", aside);
        std::vector<std::wstring> others;
        do {
            std::wstring n = fd.cFileName;
            if (n != L"." && n != L".." && n != L"Files" && n != L"Hives") others.push_back(n);
        } while (FindNextFileW(f, &fd));
        FindClose(f);
        for (const auto& n : others) {
            std::wstring from = aside + L"\\" + n, to = target + L"\\" + n;
            if (!MoveFileExW(from.c_str(), to.c_str(), 0)) win::throw_last("MoveFileExW", to);
        }
        win::remove_tree(aside);
    } catch (...) {
        win::remove_tree_noexcept(target);
        MoveFileExW(aside.c_str(), target.c_str(), 0);
        throw;
    }
}

bool same_folder(std::string a, std::string b) {
    for (auto* s : {&a, &b}) {
        for (auto& c : *s) c = c == '/' ? '\\' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        while (!s->empty() && s->back() == '\\') s->pop_back();
    }
    return a == b;
}

}  // namespace

void winlayer::emulator::count_call(const char* name) {
    std::lock_guard<std::mutex> lock(g_mutex);
    ++g_calls[name];
}

HRESULT WINAPI ActivateLayer(WinlayerDriverInfo* info, PCWSTR id) {
    return run("ActivateLayer", [&] { backend().activate_layer(driver(info), layer_id(info, id)); });
}

HRESULT WINAPI DeactivateLayer(WinlayerDriverInfo* info, PCWSTR id) {
    return run("DeactivateLayer", [&] { backend().deactivate_layer(driver(info), layer_id(info, id)); });
}

HRESULT WINAPI CreateLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR parent) {
    return run("CreateLayer", [&] {
        backend().create_layer(driver(info), layer_id(info, id), parent ? layer_id(info, parent) : std::string());
    });
}

HRESULT WINAPI CreateSandboxLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR parent, WinlayerLayerDescriptor* layers,
                                  ULONG_PTR count) {
    return run("CreateSandboxLayer", [&] {
        backend().create_sandbox_layer(driver(info), layer_id(info, id),
                                       parent ? layer_id(info, parent) : std::string(), chain(layers, count));
    });
}

HRESULT WINAPI ExpandSandboxSize(WinlayerDriverInfo* info, PCWSTR id, ULONGLONG size) {
    return run("ExpandSandboxSize", [&] { backend().expand_sandbox_size(driver(info), layer_id(info, id), size); });
}

HRESULT WINAPI DestroyLayer(WinlayerDriverInfo* info, PCWSTR id) {
    return run("DestroyLayer", [&] { backend().destroy_layer(driver(info), layer_id(info, id)); });
}

HRESULT WINAPI ImportLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR folder, WinlayerLayerDescriptor* layers,
                           ULONG_PTR count) {
    return run("ImportLayer", [&] {
        if (!folder) throw Error(ErrorKind::InvalidArgument, "import folder is NULL");
        winlayer::DriverInfo d = driver(info);
        std::string lid = layer_id(info, id), layer = folder_of(d, lid);
        LayerChain parents = chain(layers, count);
        if (written_in_place(layer)) {  // the UtilityVM the caller cloned and changed in place stays
            adopt(layer, parents, [&](const std::wstring&, winlayer::LayerWriter& w) {
                winlayer::emulator::import_folder(folder, w);
            });
            return;
        }
        auto writer = backend().import_writer(d, lid, parents);
        winlayer::emulator::import_folder(folder, *writer);
    });
}

HRESULT WINAPI ExportLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR folder, WinlayerLayerDescriptor* layers,
                           ULONG_PTR count) {
    return run("ExportLayer", [&] {
        if (!folder) throw Error(ErrorKind::InvalidArgument, "export folder is NULL");
        auto reader = backend().export_reader(driver(info), layer_id(info, id), chain(layers, count));
        winlayer::emulator::export_folder(*reader, folder);
    });
}

HRESULT WINAPI GetLayerMountPath(WinlayerDriverInfo* info, PCWSTR id, SIZE_T* length, PWSTR buffer) {
    return run("GetLayerMountPath", [&] {
        if (!length) throw Error(ErrorKind::InvalidArgument, "length is NULL");
        winlayer::DriverInfo d = driver(info);
        std::string lid = layer_id(info, id);
        std::string path = backend().get_layer_mount_path(d, lid);
        // HCS has a mount path only for a prepared layer; the portable backend answers
        // the layer folder for the others.
        std::string folder = d.home.empty() ? lid : d.home + "\\" + lid;
        std::wstring w = same_folder(path, folder) ? std::wstring() : win::widen(path);
        SIZE_T needed = w.empty() ? 0 : w.size() + 1;
        if (!buffer) {
            *length = needed;
            return;
        }
        if (*length < needed) throw Error::win32(ERROR_INSUFFICIENT_BUFFER, "GetLayerMountPath");
        std::copy(w.c_str(), w.c_str() + needed, buffer);
        *length = needed;
    });
}

HRESULT WINAPI LayerExists(WinlayerDriverInfo* info, PCWSTR id, BOOL* exists) {
    return run("LayerExists", [&] {
        if (!exists) throw Error(ErrorKind::InvalidArgument, "exists is NULL");
        *exists = backend().layer_exists(driver(info), layer_id(info, id)) ? TRUE : FALSE;
    });
}

HRESULT WINAPI NameToGuid(PCWSTR name, GUID* guid) {
    return run("NameToGuid", [&] {
        if (!name || !guid) throw Error(ErrorKind::InvalidArgument, "NameToGuid: NULL argument");
        std::string s = backend().name_to_guid(utf8(name));
        if (!parse_guid(s, *guid)) throw Error(ErrorKind::Internal, "not a GUID: " + s);
    });
}

HRESULT WINAPI PrepareLayer(WinlayerDriverInfo* info, PCWSTR id, WinlayerLayerDescriptor* layers, ULONG_PTR count) {
    return run("PrepareLayer",
               [&] { backend().prepare_layer(driver(info), layer_id(info, id), chain(layers, count)); });
}

HRESULT WINAPI UnprepareLayer(WinlayerDriverInfo* info, PCWSTR id) {
    return run("UnprepareLayer", [&] { backend().unprepare_layer(driver(info), layer_id(info, id)); });
}

HRESULT WINAPI GetBaseImages(PWSTR* json) {
    return run("GetBaseImages", [&] {
        if (!json) throw Error(ErrorKind::InvalidArgument, "GetBaseImages: NULL argument");
        std::wstring w = win::widen(backend().get_base_images());
        auto* out = static_cast<PWSTR>(CoTaskMemAlloc((w.size() + 1) * sizeof(wchar_t)));
        if (!out) throw std::bad_alloc();
        std::copy(w.c_str(), w.c_str() + w.size() + 1, out);
        *json = out;
    });
}

HRESULT WINAPI ProcessBaseImage(PCWSTR path) {
    return run("ProcessBaseImage", [&] {
        std::string layer = plain_path(path);
        backend().process_base_image(layer);  // the registry hives are there
        // The base writer's folder becomes a layer ExportLayer can export.
        if (written_in_place(layer))
            adopt(layer, {}, [&](const std::wstring& aside, winlayer::LayerWriter& w) {
                winlayer::emulator::import_written_folder(aside, w, win::long_path(layer));
            });
    });
}

HRESULT WINAPI ProcessUtilityImage(PCWSTR path) {
    return run("ProcessUtilityImage", [&] {
        std::string uvm = plain_path(path);
        backend().process_utility_image(uvm);  // the folder and its BCD are there
        // The boot files are rewritten for the layer; the utility VM, complete now, joins
        // the layer's records.
        std::string layer = winlayer::portable::dir_name(uvm);
        winlayer::emulator::rewrite_boot_files(layer);
        if (!written_in_place(layer)) winlayer::emulator::record_utility_vm(layer);
    });
}

HRESULT WINAPI GrantVmAccess(PCWSTR vm_id, PCWSTR path) {
    return run("GrantVmAccess", [&] { backend().grant_vm_access(utf8(vm_id), plain_path(path)); });
}

extern "C" __declspec(dllexport) long WINAPI HcsEmulatorCallCount(PCWSTR name) {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_calls.find(utf8(name));
    return it == g_calls.end() ? 0 : it->second;
}

extern "C" __declspec(dllexport) void WINAPI HcsEmulatorReset() {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_calls.clear();
}
