// The Backup API emulation the backend uses under Wine (native/windows/backup_api.hpp:
// this DLL exports WinlayerBackupApi). Wine has no BackupRead/BackupWrite, so they are
// emulated over plain files; the token and privilege calls go to Wine's advapi32 and are
// only counted. Written from the Win32 documentation of the backup stream, not from the
// backend's encoder or decoder, so that each checks the other:
//
//   WIN32_STREAM_ID: u32 dwStreamId, u32 dwStreamAttributes, u64 Size, u32 dwStreamNameSize,
//   then the UTF-16 name (dwStreamNameSize bytes), then Size bytes of payload; the next
//   record follows directly (no padding, as in every stream BackupRead produces for a
//   file without sparse or property data). Ids 1 BACKUP_DATA ... 10 BACKUP_TXFS_DATA.
//
// BackupWrite: BACKUP_DATA payload goes to the file through its handle; every other record
// (EA, SECURITY when bProcessSecurity, ALTERNATE_DATA, LINK, OBJECT_ID, REPARSE, SPARSE,
// ...) is kept verbatim in the emulator's record of the file: one file per NTFS file
// identity (volume serial + file index) under HCS_EMULATOR_BACKUP_STORE (default
// %TEMP%\hcs-emulator-backup), so hard links share it as NTFS shares a file's security,
// EAs and streams. A restore replaces the record. A SECURITY record without
// bProcessSecurity is dropped, as BackupWrite does. A record outlives its file (nothing
// sees the deletion), and a new file may get the old identity: tests that delete files
// with records clear the store.
//
// BackupRead: the BACKUP_DATA record (files only: its size from the handle, the bytes read
// through it), then the kept records (SECURITY only with bProcessSecurity).
//
// What this cannot show: real ACL enforcement (a security descriptor is kept as bytes,
// never applied), real privilege checks (Wine grants every AdjustTokenPrivileges), what
// NTFS does with reparse data (a symlink stays a plain file or folder), sparse files.
// Both calls also end on bAbort=TRUE with a NULL buffer, as the documentation says.
#include <windows.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "backup_emulation.hpp"
#include "core/error.hpp"
#include "call_count.hpp"
#include "windows/backup_api.hpp"

namespace {

constexpr std::uint32_t kData = 1, kSecurity = 3, kLastId = 10;
constexpr std::size_t kHeader = 20;

std::uint32_t le32(const std::string& b, std::size_t at) {
    std::uint32_t v = 0;
    std::memcpy(&v, b.data() + at, 4);
    return v;
}

std::uint64_t le64(const std::string& b, std::size_t at) {
    std::uint64_t v = 0;
    std::memcpy(&v, b.data() + at, 8);
    return v;
}

std::wstring store_folder() {
    wchar_t buf[4096];
    DWORD n = GetEnvironmentVariableW(L"HCS_EMULATOR_BACKUP_STORE", buf, 4096);
    std::wstring dir;
    if (n && n < 4096) {
        dir.assign(buf, n);
    } else {
        n = GetTempPathW(4096, buf);
        dir = std::wstring(buf, n) + L"hcs-emulator-backup";
    }
    CreateDirectoryW(dir.c_str(), nullptr);
    return dir;
}

// The record file of the file behind `h`, or "" when the handle has no identity.
std::wstring record_path(HANDLE h) {
    BY_HANDLE_FILE_INFORMATION info{};
    if (!GetFileInformationByHandle(h, &info)) return {};
    wchar_t name[64];
    swprintf(name, 64, L"\\%08lx-%08lx%08lx", info.dwVolumeSerialNumber, info.nFileIndexHigh, info.nFileIndexLow);
    return store_folder() + name;
}

bool is_directory(HANDLE h) {
    BY_HANDLE_FILE_INFORMATION info{};
    return GetFileInformationByHandle(h, &info) && (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY);
}

std::string read_record(const std::wstring& path) {
    std::string out;
    HANDLE f = CreateFileW(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING, 0, nullptr);
    if (f == INVALID_HANDLE_VALUE) return out;
    char buf[4096];
    DWORD got = 0;
    while (ReadFile(f, buf, sizeof buf, &got, nullptr) && got) out.append(buf, got);
    CloseHandle(f);
    return out;
}

bool write_record(const std::wstring& path, const std::string& bytes) {
    if (bytes.empty()) return DeleteFileW(path.c_str()) || GetLastError() == ERROR_FILE_NOT_FOUND;
    HANDLE f = CreateFileW(path.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_ALWAYS, 0, nullptr);
    if (f == INVALID_HANDLE_VALUE) return false;
    DWORD done = 0;
    BOOL ok = WriteFile(f, bytes.data(), static_cast<DWORD>(bytes.size()), &done, nullptr);
    CloseHandle(f);
    return ok && done == bytes.size();
}

struct WriteState {
    std::wstring record;  // the record file
    std::string kept;     // the non-data records restored so far
    std::string header;   // the record being parsed: its header and name
    std::uint32_t id = 0;
    std::uint64_t left = 0;  // payload bytes still to come
    bool in_payload = false;
    bool keep = false;  // this record's bytes go to `kept`
};

BOOL fail(DWORD code) {
    SetLastError(code);
    return FALSE;
}

// BackupWrite without the count: the emulator's own writes (ExportLayer) go here.
BOOL backup_write(HANDLE h, LPBYTE buffer, DWORD size, LPDWORD written, BOOL abort, BOOL security, LPVOID* context) {
    if (!context || !written) return fail(ERROR_INVALID_PARAMETER);
    auto* st = static_cast<WriteState*>(*context);
    *written = 0;
    if (abort) {
        delete st;
        *context = nullptr;
        return TRUE;
    }
    if (!st) {
        st = new WriteState;
        st->record = record_path(h);
        if (st->record.empty() || !write_record(st->record, {})) {
            delete st;
            return fail(ERROR_INVALID_HANDLE);
        }
        *context = st;
    }
    DWORD used = 0;
    while (used < size) {
        if (!st->in_payload) {
            std::size_t want = st->header.size() < kHeader ? kHeader : kHeader + le32(st->header, 16);
            std::size_t take = std::min<std::size_t>(want - st->header.size(), size - used);
            st->header.append(reinterpret_cast<const char*>(buffer + used), take);
            used += static_cast<DWORD>(take);
            if (st->header.size() < kHeader) continue;
            st->id = le32(st->header, 0);
            if (st->id == 0 || st->id > kLastId || le32(st->header, 16) % 2) return fail(ERROR_INVALID_DATA);
            if (st->header.size() < kHeader + le32(st->header, 16)) continue;  // the name is still to come
            st->left = le64(st->header, 8);
            st->in_payload = true;
            st->keep = st->id != kData && (st->id != kSecurity || security);
            if (st->keep) st->kept += st->header;
        } else {
            DWORD take = static_cast<DWORD>(std::min<std::uint64_t>(st->left, size - used));
            if (st->id == kData) {
                DWORD done = 0;
                if (!WriteFile(h, buffer + used, take, &done, nullptr)) return FALSE;
                take = done;
            } else if (st->keep) {
                st->kept.append(reinterpret_cast<const char*>(buffer + used), take);
            }
            used += take;
            st->left -= take;
        }
        if (st->in_payload && st->left == 0) {  // the record is complete
            if (st->keep && !write_record(st->record, st->kept)) return FALSE;
            st->header.clear();
            st->in_payload = false;
        }
        *written = used;
    }
    *written = used;
    return TRUE;
}

BOOL WINAPI EmulatedBackupWrite(HANDLE h, LPBYTE buffer, DWORD size, LPDWORD written, BOOL abort, BOOL security,
                                LPVOID* context) {
    winlayer::emulator::count_call("BackupWrite");
    return backup_write(h, buffer, size, written, abort, security, context);
}

struct ReadState {
    std::string pending;     // bytes ready to hand out
    std::size_t at = 0;
    std::uint64_t data_left = 0;  // file bytes still to read through the handle
    std::string tail;        // the kept records, after the data
};

// BackupRead without the count: the emulator's own reads (ProcessBaseImage) go here.
BOOL backup_read(HANDLE h, LPBYTE buffer, DWORD size, LPDWORD read, BOOL abort, BOOL security, LPVOID* context) {
    if (!context || !read) return fail(ERROR_INVALID_PARAMETER);
    auto* st = static_cast<ReadState*>(*context);
    *read = 0;
    if (abort) {
        delete st;
        *context = nullptr;
        return TRUE;
    }
    if (!st) {
        std::wstring record = record_path(h);
        if (record.empty()) return fail(ERROR_INVALID_HANDLE);
        st = new ReadState;
        if (!is_directory(h)) {
            LARGE_INTEGER n{};
            if (!GetFileSizeEx(h, &n)) {
                delete st;
                return FALSE;
            }
            std::uint32_t fields[2] = {kData, 0};
            std::uint64_t bytes = static_cast<std::uint64_t>(n.QuadPart);
            std::uint32_t name = 0;
            st->pending.append(reinterpret_cast<const char*>(fields), 8);
            st->pending.append(reinterpret_cast<const char*>(&bytes), 8);
            st->pending.append(reinterpret_cast<const char*>(&name), 4);
            st->data_left = bytes;
        }
        std::string kept = read_record(record);
        for (std::size_t at = 0; at + kHeader <= kept.size();) {  // written by BackupWrite above
            std::size_t whole = kHeader + le32(kept, at + 16) + le64(kept, at + 8);
            if (le32(kept, at) != kSecurity || security) st->tail.append(kept, at, whole);
            at += whole;
        }
        *context = st;
    }
    DWORD done = 0;
    while (done < size) {
        if (st->at < st->pending.size()) {
            std::size_t take = std::min<std::size_t>(st->pending.size() - st->at, size - done);
            std::memcpy(buffer + done, st->pending.data() + st->at, take);
            st->at += take;
            done += static_cast<DWORD>(take);
        } else if (st->data_left) {
            DWORD want = static_cast<DWORD>(std::min<std::uint64_t>(st->data_left, size - done)), got = 0;
            if (!ReadFile(h, buffer + done, want, &got, nullptr)) return FALSE;
            if (got == 0) return fail(ERROR_HANDLE_EOF);  // the file shrank under the backup
            done += got;
            st->data_left -= got;
        } else if (!st->tail.empty()) {
            st->pending = std::move(st->tail);
            st->tail.clear();
            st->at = 0;
        } else {
            break;  // the end of the stream: 0 bytes read
        }
    }
    *read = done;
    return TRUE;
}

BOOL WINAPI EmulatedBackupRead(HANDLE h, LPBYTE buffer, DWORD size, LPDWORD read, BOOL abort, BOOL security,
                               LPVOID* context) {
    winlayer::emulator::count_call("BackupRead");
    return backup_read(h, buffer, size, read, abort, security, context);
}

BOOL WINAPI CountedOpenThreadToken(HANDLE thread, DWORD access, BOOL self, PHANDLE token) {
    winlayer::emulator::count_call("OpenThreadToken");
    return OpenThreadToken(thread, access, self, token);
}

BOOL WINAPI CountedImpersonateSelf(SECURITY_IMPERSONATION_LEVEL level) {
    winlayer::emulator::count_call("ImpersonateSelf");
    return ImpersonateSelf(level);
}

BOOL WINAPI CountedRevertToSelf() {
    winlayer::emulator::count_call("RevertToSelf");
    return RevertToSelf();
}

BOOL WINAPI CountedLookupPrivilegeValueW(LPCWSTR system, LPCWSTR name, PLUID luid) {
    winlayer::emulator::count_call("LookupPrivilegeValueW");
    return LookupPrivilegeValueW(system, name, luid);
}

BOOL WINAPI CountedAdjustTokenPrivileges(HANDLE token, BOOL disable_all, PTOKEN_PRIVILEGES state, DWORD length,
                                         PTOKEN_PRIVILEGES previous, PDWORD returned) {
    winlayer::emulator::count_call("AdjustTokenPrivileges");
    return AdjustTokenPrivileges(token, disable_all, state, length, previous, returned);
}

const winlayer::win::BackupApi kEmulation = {EmulatedBackupRead,         EmulatedBackupWrite,
                                             CountedOpenThreadToken,     CountedImpersonateSelf,
                                             CountedRevertToSelf,        CountedLookupPrivilegeValueW,
                                             CountedAdjustTokenPrivileges};

}  // namespace

namespace winlayer::emulator {

std::string backup_stream(HANDLE h, bool security) {
    std::string out;
    LPVOID context = nullptr;
    BYTE buf[1 << 16];
    for (;;) {
        DWORD got = 0;
        if (!backup_read(h, buf, sizeof buf, &got, FALSE, security, &context)) {
            DWORD code = GetLastError();
            backup_read(h, nullptr, 0, &got, TRUE, security, &context);
            throw Error::win32(code, "BackupRead");
        }
        if (got == 0) break;
        out.append(reinterpret_cast<const char*>(buf), got);
    }
    DWORD none = 0;
    backup_read(h, nullptr, 0, &none, TRUE, security, &context);
    return out;
}

void restore(HANDLE h, const std::string& stream, bool security) {
    LPVOID context = nullptr;
    std::string copy = stream;
    DWORD done = 0;
    BOOL ok = backup_write(h, reinterpret_cast<LPBYTE>(copy.data()), static_cast<DWORD>(copy.size()), &done, FALSE,
                           security, &context);
    DWORD code = GetLastError();
    DWORD none = 0;
    backup_write(h, nullptr, 0, &none, TRUE, security, &context);
    if (!ok || done != copy.size()) throw Error::win32(ok ? ERROR_WRITE_FAULT : code, "BackupWrite");
}

std::string kept_records(HANDLE h) {
    std::wstring record = record_path(h);
    if (record.empty()) throw Error::win32(GetLastError(), "GetFileInformationByHandle");
    return read_record(record);
}

void keep_records(HANDLE h, const std::string& records) {
    std::wstring record = record_path(h);
    if (record.empty() || !write_record(record, records)) throw Error::win32(GetLastError(), "BackupWrite (emulated)");
}

}  // namespace winlayer::emulator

extern "C" __declspec(dllexport) const winlayer::win::BackupApi* WINAPI WinlayerBackupApi() { return &kEmulation; }
