#include "staging.hpp"

namespace winlayer::win {

namespace {

const wchar_t kPrefix[] = L".winlayer-";

std::wstring lock_of(const std::wstring& folder) { return folder + L".lock"; }

}  // namespace

StagingFolder::StagingFolder(const std::string& layer_folder, const char* kind) {
    std::wstring layer = long_path(layer_folder);
    std::size_t slash = layer.find_last_of(L'\\');
    std::wstring parent = layer.substr(0, slash), name = layer.substr(slash + 1);
    create_directories(parent);
    path_ = parent + L"\\" + kPrefix + widen(kind) + L"-" + name + L"-" + widen(random_suffix());
    std::wstring lock = lock_of(path_);
    lock_ = Handle(CreateFileW(lock.c_str(), GENERIC_READ | GENERIC_WRITE | DELETE, 0, nullptr, CREATE_NEW,
                               FILE_ATTRIBUTE_HIDDEN | FILE_FLAG_DELETE_ON_CLOSE, nullptr));
    if (!lock_) throw_last("CreateFileW", lock);
    create_directory(path_);
}

StagingFolder::~StagingFolder() {
    if (!removed_) remove_tree_noexcept(path_);
}

void StagingFolder::remove() {
    remove_tree(path_);
    removed_ = true;
}

std::vector<std::string> sweep_staging(const std::string& home) {
    std::vector<std::string> swept;
    std::wstring root = long_path(home);
    WIN32_FIND_DATAW fd;
    HANDLE f = FindFirstFileExW((root + L"\\" + kPrefix + L"*").c_str(), FindExInfoBasic, &fd, FindExSearchNameMatch,
                                nullptr, 0);
    if (f == INVALID_HANDLE_VALUE) {
        if (GetLastError() == ERROR_FILE_NOT_FOUND || GetLastError() == ERROR_PATH_NOT_FOUND) return swept;
        throw_last("FindFirstFileExW", root);
    }
    std::vector<std::wstring> folders;
    do {
        if (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) folders.push_back(fd.cFileName);
    } while (FindNextFileW(f, &fd));
    FindClose(f);
    for (const auto& name : folders) {
        std::wstring folder = root + L"\\" + name, lock = lock_of(folder);
        HANDLE h = CreateFileW(lock.c_str(), GENERIC_READ, 0, nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
        if (h == INVALID_HANDLE_VALUE) {
            DWORD e = GetLastError();
            if (e != ERROR_FILE_NOT_FOUND) continue;  // locked: its process is still working in it
        } else {
            CloseHandle(h);  // a lock nobody holds (a crash between creating and flagging it)
            DeleteFileW(lock.c_str());
        }
        remove_tree(folder);
        swept.push_back(narrow(name));
    }
    return swept;
}

}  // namespace winlayer::win
