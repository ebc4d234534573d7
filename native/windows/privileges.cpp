#include "privileges.hpp"

#include <map>
#include <mutex>
#include <string>

#include "backup_api.hpp"
#include "win_util.hpp"

namespace winlayer::win {

ThreadPrivileges::ThreadPrivileges(bool restore) {
    const DWORD access = TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY;
    if (!backup_api().OpenThreadToken(GetCurrentThread(), access, TRUE, &token_)) {
        if (GetLastError() != ERROR_NO_TOKEN) throw_last("OpenThreadToken");
        if (!backup_api().ImpersonateSelf(SecurityImpersonation)) throw_last("ImpersonateSelf");
        impersonating_ = true;
        if (!backup_api().OpenThreadToken(GetCurrentThread(), access, TRUE, &token_)) {
            DWORD e = GetLastError();
            backup_api().RevertToSelf();
            SetLastError(e);
            throw_last("OpenThreadToken");
        }
    }
    try {
        enable(L"SeBackupPrivilege", true);
        if (restore) enable(L"SeRestorePrivilege", true);
        enable(L"SeSecurityPrivilege", false);
    } catch (...) {
        undo();
        throw;
    }
}

ThreadPrivileges::~ThreadPrivileges() { undo(); }

namespace {

// LookupPrivilegeValueW asks the LSA; a privilege's LUID never changes, so ask once.
LUID privilege_luid(const wchar_t* name) {
    static std::mutex mutex;
    static std::map<std::wstring, LUID> known;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = known.find(name);
    if (it != known.end()) return it->second;
    LUID luid{};
    if (!backup_api().LookupPrivilegeValueW(nullptr, name, &luid)) throw_last("LookupPrivilegeValueW", narrow(name));
    known.emplace(name, luid);
    return luid;
}

}  // namespace

void ThreadPrivileges::enable(const wchar_t* name, bool required) {
    TOKEN_PRIVILEGES tp{};
    tp.PrivilegeCount = 1;
    tp.Privileges[0].Attributes = SE_PRIVILEGE_ENABLED;
    tp.Privileges[0].Luid = privilege_luid(name);
    TOKEN_PRIVILEGES prev{};
    DWORD prev_len = 0;
    if (!backup_api().AdjustTokenPrivileges(token_, FALSE, &tp, sizeof prev, &prev, &prev_len))
        throw_last("AdjustTokenPrivileges", narrow(name));
    // AdjustTokenPrivileges "succeeds" when the token lacks the privilege.
    if (GetLastError() == ERROR_NOT_ALL_ASSIGNED) {
        if (!required) return;
        throw Error::win32(ERROR_NOT_ALL_ASSIGNED,
                           "AdjustTokenPrivileges (run as administrator: layer import/export needs it)",
                           narrow(name));
    }
    // An empty previous state means the privilege was already enabled.
    if (prev.PrivilegeCount == 1) previous_[n_previous_++] = {prev.Privileges[0].Luid, prev.Privileges[0].Attributes};
}

void ThreadPrivileges::undo() noexcept {
    if (impersonating_) {
        backup_api().RevertToSelf();
        impersonating_ = false;
    } else if (token_) {
        for (int i = 0; i < n_previous_; ++i) {
            TOKEN_PRIVILEGES tp{};
            tp.PrivilegeCount = 1;
            tp.Privileges[0].Luid = previous_[i].luid;
            tp.Privileges[0].Attributes = previous_[i].attributes;
            backup_api().AdjustTokenPrivileges(token_, FALSE, &tp, 0, nullptr, nullptr);
        }
    }
    n_previous_ = 0;
    if (token_) CloseHandle(token_);
    token_ = nullptr;
}

}  // namespace winlayer::win
