// Backup/restore privileges for the calling thread only, while an import or export
// runs. The process token is never touched: the thread impersonates itself (or, when it
// already impersonates, adjusts that token), and everything is restored on scope exit.
#pragma once

#include <windows.h>

namespace winlayer::win {

class ThreadPrivileges {
public:
    // Enables SeBackupPrivilege (and SeRestorePrivilege when `restore`) or throws
    // Error::win32(ERROR_NOT_ALL_ASSIGNED) naming the missing privilege;
    // SeSecurityPrivilege is enabled when held (needed for a data root on a VHDX).
    explicit ThreadPrivileges(bool restore);
    ~ThreadPrivileges();
    ThreadPrivileges(const ThreadPrivileges&) = delete;
    ThreadPrivileges& operator=(const ThreadPrivileges&) = delete;

private:
    void enable(const wchar_t* name, bool required);
    void undo() noexcept;

    HANDLE token_ = nullptr;
    bool impersonating_ = false;  // we called ImpersonateSelf: RevertToSelf undoes everything
    struct Previous {
        LUID luid;
        DWORD attributes;
    };
    Previous previous_[3]{};
    int n_previous_ = 0;
};

}  // namespace winlayer::win
