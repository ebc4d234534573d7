#include "backup_api.hpp"

#include <atomic>

namespace winlayer::win {

namespace {

const BackupApi kSystem = {::BackupRead,      ::BackupWrite,          ::OpenThreadToken,      ::ImpersonateSelf,
                           ::RevertToSelf,    ::LookupPrivilegeValueW, ::AdjustTokenPrivileges};

std::atomic<const BackupApi*> g_api{&kSystem};

}  // namespace

const BackupApi& backup_api() { return *g_api.load(std::memory_order_acquire); }

void install_backup_api(HMODULE module) {
    auto provider = reinterpret_cast<BackupApiProvider>(reinterpret_cast<void*>(GetProcAddress(module, kBackupApiExport)));
    if (!provider) return;
    if (const BackupApi* api = provider()) g_api.store(api, std::memory_order_release);
}

}  // namespace winlayer::win
