// What the Backup API emulation (backup_emulation.cpp) offers the emulator itself: the
// emulator's own reads and writes of a layer folder go through these, uncounted, so that
// the per-call counts show only the backend's calls.
#pragma once

#include <windows.h>

#include <string>

namespace winlayer::emulator {

// The whole backup stream of the file or folder behind `h`, as BackupRead gives it:
// BACKUP_DATA first (files only), then the records BackupWrite kept (SECURITY only with
// `security`). Throws Error::win32.
std::string backup_stream(HANDLE h, bool security);

// Restores a whole backup stream into the file or folder behind `h`, as BackupWrite does.
void restore(HANDLE h, const std::string& stream, bool security);

// The records BackupWrite kept for the file behind `h` (every record but its data, back
// to back), and replacing them ("" forgets them: a new file has none).
std::string kept_records(HANDLE h);
void keep_records(HANDLE h, const std::string& records);

}  // namespace winlayer::emulator
