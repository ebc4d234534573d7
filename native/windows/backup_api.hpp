// The Backup API seam: every BackupRead/BackupWrite and every token or privilege call the
// vmcompute backend makes goes through this table. Its default is kernel32/advapi32.
//
// A vmcompute.dll that exports `WinlayerBackupApi` (a function returning a pointer to a
// BackupApi table) replaces the default when the backend loads it (hcs_api.cpp). The real
// vmcompute.dll has no such export; the HCS emulator (native/hcs_emulator/backup_emulation.cpp)
// has one, so that under Wine, which lacks BackupRead/BackupWrite, the backend's backup
// paths run against an emulation of the stream format over plain files.
#pragma once

#include <windows.h>

namespace winlayer::win {

struct BackupApi {
    BOOL(WINAPI* BackupRead)(HANDLE, LPBYTE, DWORD, LPDWORD, BOOL, BOOL, LPVOID*);
    BOOL(WINAPI* BackupWrite)(HANDLE, LPBYTE, DWORD, LPDWORD, BOOL, BOOL, LPVOID*);
    BOOL(WINAPI* OpenThreadToken)(HANDLE, DWORD, BOOL, PHANDLE);
    BOOL(WINAPI* ImpersonateSelf)(SECURITY_IMPERSONATION_LEVEL);
    BOOL(WINAPI* RevertToSelf)();
    BOOL(WINAPI* LookupPrivilegeValueW)(LPCWSTR, LPCWSTR, PLUID);
    BOOL(WINAPI* AdjustTokenPrivileges)(HANDLE, BOOL, PTOKEN_PRIVILEGES, DWORD, PTOKEN_PRIVILEGES, PDWORD);
};

// The name of the vmcompute.dll export that supplies a replacement table.
constexpr const char* kBackupApiExport = "WinlayerBackupApi";
using BackupApiProvider = const BackupApi*(WINAPI*)();

// The table in use (the default until install_backup_api).
const BackupApi& backup_api();

// Uses `module`'s replacement table when it exports one; otherwise keeps the default.
void install_backup_api(HMODULE module);

}  // namespace winlayer::win
