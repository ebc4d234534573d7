// The vmcompute.dll layer exports (HCS v1), declared once for the caller (hcs_api.cpp)
// and the test-only look-alike (native/hcs_emulator), so both sides share one ABI.
// There is no SDK header; the layouts are those of REFERENCE.md section 1.
#pragma once

#include <windows.h>

#ifdef WINLAYER_VMCOMPUTE_EXPORTS
#define WINLAYER_VMCOMPUTE_API extern "C" __declspec(dllexport)
#else
#define WINLAYER_VMCOMPUTE_API extern "C"
#endif

struct WinlayerDriverInfo {
    int Flavour;      // 0 = windowsdiff, 1 = windowsfilter
    PCWSTR HomeDir;   // the driver's home, or "" when `id` is a full layer path
};

struct WinlayerLayerDescriptor {  // WC_LAYER_DESCRIPTOR
    GUID LayerId;
    ULONG Flags;
    PCWSTR Path;
};

static_assert(sizeof(void*) != 8 || sizeof(WinlayerDriverInfo) == 16, "DriverInfo layout");
static_assert(sizeof(void*) != 8 || sizeof(WinlayerLayerDescriptor) == 32, "WC_LAYER_DESCRIPTOR layout");

// The descriptor count is passed pointer-sized: whether HCS reads a ULONG or a SIZE_T
// there, a zero-extended 64-bit value is read correctly (hcsshim passes it the same way).
WINLAYER_VMCOMPUTE_API HRESULT WINAPI ActivateLayer(WinlayerDriverInfo* info, PCWSTR id);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI DeactivateLayer(WinlayerDriverInfo* info, PCWSTR id);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI CreateLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR parentId);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI CreateSandboxLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR parentId,
                                                         WinlayerLayerDescriptor* layers, ULONG_PTR count);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI ExpandSandboxSize(WinlayerDriverInfo* info, PCWSTR id, ULONGLONG size);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI DestroyLayer(WinlayerDriverInfo* info, PCWSTR id);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI ExportLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR exportFolder,
                                                  WinlayerLayerDescriptor* layers, ULONG_PTR count);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI ImportLayer(WinlayerDriverInfo* info, PCWSTR id, PCWSTR importFolder,
                                                  WinlayerLayerDescriptor* layers, ULONG_PTR count);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI GetLayerMountPath(WinlayerDriverInfo* info, PCWSTR id,
                                                        SIZE_T* length, PWSTR buffer);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI LayerExists(WinlayerDriverInfo* info, PCWSTR id, BOOL* exists);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI NameToGuid(PCWSTR name, GUID* guid);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI PrepareLayer(WinlayerDriverInfo* info, PCWSTR id,
                                                   WinlayerLayerDescriptor* layers, ULONG_PTR count);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI UnprepareLayer(WinlayerDriverInfo* info, PCWSTR id);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI GetBaseImages(PWSTR* json);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI ProcessBaseImage(PCWSTR layerPath);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI ProcessUtilityImage(PCWSTR utilityVmPath);
WINLAYER_VMCOMPUTE_API HRESULT WINAPI GrantVmAccess(PCWSTR vmId, PCWSTR filePath);
