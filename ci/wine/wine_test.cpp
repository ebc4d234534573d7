// The vmcompute backend (native/windows) under Wine, against the HCS emulator
// (native/hcs_emulator). Checks every vmcompute call the backend makes, the HRESULT
// mapping and retries (the emulator fails calls on request), the staging-folder import
// and the export, the base writer (BackupWrite in place, ProcessBaseImage and
// ProcessUtilityImage) with its export and re-import, a delta layer's UtilityVM clone,
// and sandboxes, with Unicode and 300-character paths; BackupRead/BackupWrite run on the
// emulator's Backup API emulation. Real ACLs and privilege checks are covered by the
// `hcs` pytest suite on Windows.
//
// Usage: wine_test.exe <emulator vmcompute.dll> <empty work folder>
// Prints one line per test and "N passed, M failed" last; exit code 1 on any failure.
#include <windows.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/error.hpp"
#include "windows/backup_file.hpp"
#include "windows/hcs_api.hpp"
#include "windows/vmcompute.h"
#include "windows/win_util.hpp"

using namespace winlayer;

namespace {

int g_passed = 0, g_failed = 0;
std::string g_failure;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) throw CheckFailed(std::string(#cond) + " (line " + std::to_string(__LINE__) + ")"); \
    } while (0)

struct CheckFailed {
    std::string what;
    explicit CheckFailed(std::string w) : what(std::move(w)) {}
};

void test(const char* name, const std::function<void()>& body) {
    try {
        body();
        ++g_passed;
        std::printf("PASS %s\n", name);
    } catch (const CheckFailed& f) {
        ++g_failed;
        std::printf("FAIL %s: %s\n", name, f.what.c_str());
    } catch (const Error& e) {
        ++g_failed;
        std::printf("FAIL %s: winlayer::Error %s\n", name, e.what());
    } catch (const std::exception& e) {
        ++g_failed;
        std::printf("FAIL %s: %s\n", name, e.what());
    }
    std::fflush(stdout);
}

// Runs `body`, which must throw a winlayer::Error; returns it.
Error expect_error(const std::function<void()>& body) {
    try {
        body();
    } catch (const Error& e) {
        return e;
    }
    throw CheckFailed("expected a winlayer::Error, got none");
}

void set_fail(const char* spec) { SetEnvironmentVariableA("HCS_EMULATOR_FAIL", spec); }

long calls(const wchar_t* op) {
    using Fn = long(WINAPI*)(PCWSTR);
    static Fn fn = reinterpret_cast<Fn>(
        reinterpret_cast<void*>(GetProcAddress(GetModuleHandleW(L"vmcompute.dll"), "HcsEmulatorCallCount")));
    if (!fn) throw CheckFailed("the emulator's HcsEmulatorCallCount is missing");
    return fn(op);
}

std::string read_file(const std::wstring& path) {
    win::Handle h(CreateFileW(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                              FILE_FLAG_BACKUP_SEMANTICS, nullptr));
    if (!h) win::throw_last("CreateFileW", path);
    std::string out;
    char buf[4096];
    DWORD got = 0;
    while (ReadFile(h.get(), buf, sizeof buf, &got, nullptr) && got) out.append(buf, got);
    return out;
}

std::string read_all(Source& src) {
    std::string out;
    std::uint8_t buf[4096];
    for (std::size_t n; (n = src.read(buf, sizeof buf)) != 0;) out.append(reinterpret_cast<char*>(buf), n);
    return out;
}

void write_file(const std::wstring& path, const std::string& data, const FileTimes* times = nullptr) {
    win::Handle h(CreateFileW(path.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, nullptr));
    if (!h) win::throw_last("CreateFileW", path);
    DWORD done = 0;
    if (!data.empty() && !WriteFile(h.get(), data.data(), static_cast<DWORD>(data.size()), &done, nullptr))
        win::throw_last("WriteFile", path);
    if (times) win::set_basic_info(h.get(), *times, 0, path);
}

// Names in `dir` (a long path) other than "." and "..".
std::vector<std::wstring> list_dir(const std::wstring& dir) {
    std::vector<std::wstring> out;
    WIN32_FIND_DATAW fd;
    HANDLE f = FindFirstFileW((dir + L"\\*").c_str(), &fd);
    if (f == INVALID_HANDLE_VALUE) return out;
    do {
        std::wstring n = fd.cFileName;
        if (n != L"." && n != L"..") out.push_back(n);
    } while (FindNextFileW(f, &fd));
    FindClose(f);
    return out;
}

// A self-relative security descriptor "O:BAG:BA" (what Linux-side writers give entries).
std::string sample_sd() {
    const unsigned char sd[] = {1, 0, 0, 0x80, 0x14, 0, 0, 0, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                1, 2, 0, 0, 0, 0, 0, 5, 0x20, 0, 0, 0, 0x20, 2, 0, 0, 1, 2, 0, 0,
                                0, 0, 0, 5, 0x20, 0, 0, 0, 0x20, 2, 0, 0};
    return std::string(reinterpret_cast<const char*>(sd), sizeof sd);
}

// 4-byte attributes + backup stream: SECURITY then DATA (REFERENCE.md sections 2, 3),
// built by hand so that the emulator's reading of the format is checked independently.
std::string staged(std::uint32_t attributes, const std::string& sd, const std::string* data) {
    std::string out(reinterpret_cast<const char*>(&attributes), 4);
    auto header = [&](std::uint32_t id, std::uint32_t attr, std::uint64_t size) {
        out.append(reinterpret_cast<const char*>(&id), 4);
        out.append(reinterpret_cast<const char*>(&attr), 4);
        out.append(reinterpret_cast<const char*>(&size), 8);
        std::uint32_t name = 0;
        out.append(reinterpret_cast<const char*>(&name), 4);
    };
    header(3, 2, sd.size());
    out += sd;
    if (data) {
        header(1, 0, data->size());
        out += *data;
    }
    return out;
}

constexpr std::int64_t kT1 = 132000000000000000LL;  // 2019-04-13, in FILETIME ticks
constexpr std::int64_t kT2 = 132500000000000000LL;

FileTimes times(std::int64_t t) { return FileTimes{t, t + 1, t + 2, t + 3}; }

struct Fixture {
    DriverInfo info;
    std::wstring home;  // long path
    std::string base_folder;
};

// A base layer made with the raw ImportLayer export and no parents, from a hand-built
// staging folder (the emulator treats an empty chain as a base import).
void make_base(Fixture& f, const std::string& id) {
    std::wstring staging = f.home + L"\\base-src";
    win::create_directories(staging);
    auto dir = [&](const std::string& rel, std::int64_t t) {
        win::create_directory(win::join(staging, rel));
        FileTimes ft = times(t);
        write_file(win::join(staging, rel) + L".$wcidirs$", staged(FILE_ATTRIBUTE_DIRECTORY, sample_sd(), nullptr), &ft);
    };
    auto file = [&](const std::string& rel, const std::string& data, std::int64_t t) {
        FileTimes ft = times(t);
        write_file(win::join(staging, rel), staged(FILE_ATTRIBUTE_ARCHIVE, sample_sd(), &data), &ft);
    };
    dir("Files", kT1);
    for (const char* d : {"Files/Windows", "Files/Windows/System32", "Files/Windows/System32/config"}) dir(d, kT1);
    for (const char* h : {"DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"})
        file(std::string("Files/Windows/System32/config/") + h, std::string("hive ") + h, kT1);
    file("Files/Windows/win.ini", "[fonts]\r\n", kT1);
    file("Files/Windows/notepad.exe", std::string(100000, 'N'), kT1);

    WinlayerDriverInfo di{1, nullptr};
    std::wstring home = win::hcs_path(f.info.home);
    di.HomeDir = home.c_str();
    std::wstring wid = win::widen(id);
    HRESULT hr = ImportLayer(&di, wid.c_str(), staging.c_str(), nullptr, 0);
    if (FAILED(hr)) throw Error::hresult(static_cast<std::uint32_t>(hr), "ImportLayer (base)", f.info.home);
    win::remove_tree(staging);
    f.base_folder = hcs::layer_folder(f.info, id);
}

LayerEntry entry(const std::string& path, EntryType type, std::uint32_t attributes, std::int64_t t,
                 std::uint64_t size = 0) {
    LayerEntry e;
    e.path = path;
    e.type = type;
    e.attributes = attributes;
    e.times = times(t);
    e.security_descriptor = sample_sd();
    e.size = size;
    return e;
}

void put(LayerWriter& w, LayerEntry e, const std::string& data) {
    e.size = data.size();
    w.add(e);
    w.write(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
}

const std::string kUnicodeName = "d\xc3\xa9j\xc3\xa0-\xe6\x95\xb0\xe6\x8d\xae-\xf0\x9f\x93\xa6";  // déjà-数据-📦
const std::string kBigData(300000, 'x');

// The layer written through the backend's staging writer: Files only (hives need
// BackupWrite, which Wine lacks).
void write_layer(Backend& b, const Fixture& f, const std::string& id) {
    auto w = b.import_writer(f.info, id, {f.base_folder});
    // The tar-split record streams in while the entries come, as an import sends it.
    Sink* split = w->tar_split_sink();
    split->write(reinterpret_cast<const std::uint8_t*>("tar-split-"), 10);
    w->add(entry("Files", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
    w->add(entry("Files/" + kUnicodeName, EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
    put(*w, entry("Files/" + kUnicodeName + "/hello.txt", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2), "hello");
    LayerEntry ads = entry("Files/" + kUnicodeName + "/hello.txt:zone", EntryType::AlternateStream, 0, kT2);
    ads.security_descriptor.clear();
    put(*w, ads, "[ZoneTransfer]");
    put(*w, entry("Files/big.bin", EntryType::File, FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_READONLY, kT2), kBigData);
    put(*w, entry("Files/empty.txt", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2), "");
    LayerEntry with_ea = entry("Files/ea.txt", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2);
    with_ea.extended_attributes = {{"USER.WINLAYER", std::string("v\0\x01", 3)}};
    put(*w, with_ea, "ea");
    LayerEntry link = entry("Files/hello-link.txt", EntryType::Symlink,
                            FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_REPARSE_POINT, kT2);
    link.link_target = kUnicodeName + "\\hello.txt";
    w->add(link);
    // A directory reparse point: staged as an empty folder + .$wcidirs$ with the reparse data.
    LayerEntry junction = entry("Files/junction", EntryType::Symlink,
                                FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT, kT2);
    junction.link_target = "C:\\Windows";
    junction.mount_point = true;
    w->add(junction);
    w->remove("Files/gone.txt");
    w->remove("Files/Windows/win.ini");
    w->add_link("Files/notepad-link.exe", "Files/Windows/notepad.exe");
    split->write(reinterpret_cast<const std::uint8_t*>("record"), 6);
    w->commit(CommitInfo{"sha256:00", kBigData.size() + 5, "", {}});
}

struct Exported {
    LayerEntry entry;
    std::string data;
};

std::map<std::string, Exported> export_all(Backend& b, const DriverInfo& info, const std::string& id,
                                            const LayerChain& parents, std::vector<std::string>* order = nullptr) {
    std::map<std::string, Exported> out;
    auto r = b.export_reader(info, id, parents);
    LayerEntry e;
    while (r->next(e)) {
        Exported x{e, {}};
        std::uint8_t buf[8192];
        for (std::size_t n; (n = r->read(buf, sizeof buf)) != 0;) x.data.append(reinterpret_cast<char*>(buf), n);
        if (order) order->push_back(e.path);
        out[e.path] = x;
    }
    return out;
}

// Feeds an export (its entries in export order) to a new layer: the re-import.
void reimport(Backend& b, const DriverInfo& info, const std::string& id, const LayerChain& parents,
              const std::map<std::string, Exported>& got, const std::vector<std::string>& order) {
    auto w = b.import_writer(info, id, parents);
    for (const auto& path : order) {
        const Exported& x = got.at(path);
        w->add(x.entry);
        if (!x.data.empty()) w->write(reinterpret_cast<const std::uint8_t*>(x.data.data()), x.data.size());
    }
    w->commit(CommitInfo{"sha256:00", 0, "", {}});
}

// "" when both exports hold the same entries with the same metadata records and data;
// otherwise the first difference.
// ProcessUtilityImage rewrites the four boot files for each layer, so they differ between
// layers of the same content: `boot_files` are left out.
std::string difference(const std::map<std::string, Exported>& a, const std::map<std::string, Exported>& b,
                       const std::vector<std::string>& boot_files) {
    for (const auto& [path, x] : a) {
        if (std::find(boot_files.begin(), boot_files.end(), path) != boot_files.end()) continue;
        auto it = b.find(path);
        if (it == b.end()) return path + ": missing from the second export";
        const LayerEntry &e = x.entry, &g = it->second.entry;
        if (e.type != g.type) return path + ": type";
        if (e.attributes != g.attributes) return path + ": attributes";
        if (e.security_descriptor != g.security_descriptor) return path + ": security descriptor";
        if (e.extended_attributes != g.extended_attributes) return path + ": extended attributes";
        if (e.reparse_data != g.reparse_data || e.link_target != g.link_target || e.mount_point != g.mount_point)
            return path + ": link";
        if (e.size != g.size || x.data != it->second.data) return path + ": data";
        if (e.times.last_write != g.times.last_write) return path + ": last-write time";
    }
    for (const auto& [path, x] : b)
        if (!a.count(path)) return path + ": missing from the first export";
    return {};
}

const char* const kBcdFiles[] = {"BCD", "BCD.LOG", "BCD.LOG1", "BCD.LOG2"};

std::string boot_file(const char* name) { return std::string("UtilityVM/Files/EFI/Microsoft/Boot/") + name; }

// A boot file as the emulator's ProcessUtilityImage leaves it in layer `id`.
std::string processed_for(const std::string& id, const std::string& bytes) {
    return "HCS emulator: processed for " + id + "\r\n" + bytes;
}

// Both exports hold the same content; each boot file is the one of `b`'s layer, `b_id`.
void check_same(const std::map<std::string, Exported>& a, const std::map<std::string, Exported>& b,
                const std::string& a_id, const std::string& b_id) {
    std::vector<std::string> boot;
    for (const char* n : kBcdFiles) boot.push_back(boot_file(n));
    std::string d = difference(a, b, boot);
    if (!d.empty()) throw CheckFailed("the exports differ: " + d);
    std::string prefix = processed_for(a_id, "");
    for (const auto& p : boot) {
        if (!a.count(p) || !b.count(p)) throw CheckFailed(p + " is missing from an export");
        const std::string& data = a.at(p).data;
        if (data.rfind(prefix, 0) != 0) throw CheckFailed(p + " was not processed for " + a_id);
        if (b.at(p).data != processed_for(b_id, data.substr(prefix.size())))
            throw CheckFailed(p + " was not processed for " + b_id);
    }
}

// The Files part of a base layer for the base writer: the five config hives, a file with an
// EA and an alternate stream, and a hard link to it.
void write_base_files(LayerWriter& w) {
    for (const char* d : {"Files", "Files/Windows", "Files/Windows/System32", "Files/Windows/System32/config"})
        w.add(entry(d, EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT1));
    for (const char* h : {"DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"})
        put(w, entry(std::string("Files/Windows/System32/config/") + h, EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT1),
            std::string("hive ") + h);
    LayerEntry rich = entry("Files/Windows/rich.txt", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT1);
    rich.extended_attributes = {{"USER.WINLAYER", "ea value"}};
    put(w, rich, "rich data");
    LayerEntry ads = entry("Files/Windows/rich.txt:zone", EntryType::AlternateStream, 0, kT1);
    ads.security_descriptor.clear();
    put(w, ads, "[ZoneTransfer]");
    w.add_link("Files/Windows/rich-link.txt", "Files/Windows/rich.txt");
}

// A base layer as a tar brings it, through the base writer (BackupWrite in place, then
// ProcessBaseImage and ProcessUtilityImage): the five config hives, a file with an EA and
// an alternate stream, a hard link to it, Hives\*_Delta, and a UtilityVM with its BCD files
// (one utility VM file with an EA).
void write_base_layer(Backend& b, const Fixture& f, const std::string& id) {
    auto w = b.import_writer(f.info, id, {});
    write_base_files(*w);
    w->add(entry("Hives", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT1));
    for (const char* h : {"DefaultUser_Delta", "Sam_Delta", "Security_Delta", "Software_Delta", "System_Delta"})
        put(*w, entry(std::string("Hives/") + h, EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT1), std::string("regf ") + h);
    for (const char* d : {"UtilityVM", "UtilityVM/Files", "UtilityVM/Files/EFI", "UtilityVM/Files/EFI/Microsoft",
                          "UtilityVM/Files/EFI/Microsoft/Boot", "UtilityVM/Files/Windows"})
        w->add(entry(d, EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT1));
    for (const char* bcd : kBcdFiles)
        put(*w, entry(boot_file(bcd), EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT1),
            std::string("bcd store ") + bcd);
    LayerEntry kernel = entry("UtilityVM/Files/Windows/kernel.sys", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT1);
    kernel.extended_attributes = {{"USER.UVM", "uvm ea"}};
    put(*w, kernel, "utility vm kernel");
    put(*w, entry("UtilityVM/Files/Windows/hal.sys", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT1), "utility vm hal");
    w->commit(CommitInfo{"sha256:00", 0, "", {}});
}

// The emulation keys what BackupWrite kept by file identity, which a new file may reuse once
// the old one is gone: after deleting files that have records, drop the records too.
void forget_backup_records() {
    wchar_t buf[4096];
    DWORD n = GetEnvironmentVariableW(L"HCS_EMULATOR_BACKUP_STORE", buf, 4096);
    std::wstring store(buf, n);
    win::remove_tree(store);
    win::create_directories(store);
}

// Whether the thread still has its own token (the privileges must be dropped after use).
bool thread_impersonates() {
    HANDLE token = nullptr;
    if (OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, TRUE, &token)) {
        CloseHandle(token);
        return true;
    }
    return GetLastError() != ERROR_NO_TOKEN;
}

bool no_staging_left(const std::wstring& home) {
    for (const auto& n : list_dir(home))
        if (n.rfind(L".winlayer-import-", 0) == 0 || n.rfind(L".winlayer-export-", 0) == 0) return false;
    return true;
}

// Layer folders and our work folders; the emulator's own store files (dot names) aside.
std::vector<std::wstring> visible_entries(const std::wstring& home) {
    std::vector<std::wstring> out;
    for (const auto& n : list_dir(home))
        if (n[0] != L'.' || !no_staging_left(home)) out.push_back(n);
    return out;
}

void scenario(const char* label, const std::wstring& home_long) {
    std::string prefix = std::string("[") + label + "] ";
    auto backend = make_vmcompute_backend();
    Backend& b = *backend;
    Fixture f;
    f.home = home_long;
    f.info.flavour = Flavour::Filter;
    f.info.home = win::narrow(home_long);
    win::create_directories(home_long);

    test((prefix + "base layer through the raw ImportLayer export").c_str(), [&] {
        make_base(f, "base");
        CHECK(b.layer_exists(f.info, "base"));
        CHECK(!b.layer_exists(f.info, "nothing-here"));
    });

    test((prefix + "CreateLayer, ProcessBaseImage and GrantVmAccess reach HCS and succeed").c_str(), [&] {
        long creates = calls(L"CreateLayer"), processed = calls(L"ProcessBaseImage"), grants = calls(L"GrantVmAccess");
        b.create_layer(f.info, "empty", "base");
        CHECK(calls(L"CreateLayer") == creates + 1);
        CHECK(b.layer_exists(f.info, "empty"));
        b.destroy_layer(f.info, "empty");
        b.create_layer(f.info, "empty", f.base_folder);  // the parent named by its folder
        CHECK(b.layer_exists(f.info, "empty"));
        CHECK(expect_error([&] { b.create_layer(f.info, "empty", "base"); }).kind == ErrorKind::Win32);  // exists
        b.destroy_layer(f.info, "empty");
        CHECK(!b.layer_exists(f.info, "empty"));
        b.process_base_image(f.base_folder);
        CHECK(calls(L"ProcessBaseImage") == processed + 1);
        b.grant_vm_access("0f6c3f10-5d5c-4c53-9a0b-1f4a8a2b7c11", f.base_folder + "\\Files\\Windows\\win.ini");
        CHECK(calls(L"GrantVmAccess") == grants + 1);
    });

    test((prefix + "import of a non-base layer through the staging folder").c_str(), [&] {
        long imports = calls(L"ImportLayer");
        write_layer(b, f, "layer1");
        CHECK(calls(L"ImportLayer") == imports + 1);
        CHECK(b.layer_exists(f.info, "layer1"));
        CHECK(no_staging_left(f.home));
        // The hard link to the parent's file is made after ImportLayer, in the layer folder.
        std::wstring link = win::join(win::long_path(hcs::layer_folder(f.info, "layer1")), "Files/notepad-link.exe");
        CHECK(read_file(link) == std::string(100000, 'N'));
        CHECK(read_all(*b.tar_split(f.info, "layer1")()) == "tar-split-record");
        CHECK(!thread_impersonates());  // the privileges were for the import only
        // Payloads of an original export come from the layer's own files.
        auto store = b.payloads(f.info, "layer1", {f.base_folder});
        auto src = store->open("Files/big.bin", kBigData.size());
        std::string got;
        std::uint8_t buf[65536];
        for (std::size_t n; (n = src->read(buf, sizeof buf)) != 0;) got.append(reinterpret_cast<char*>(buf), n);
        CHECK(got == kBigData);
        CHECK(expect_error([&] { store->open("Files/big.bin", 7); }).kind == ErrorKind::StoreCorrupt);
        CHECK(expect_error([&] { store->open("Files/../escape", 1); }).kind == ErrorKind::InvalidLayer);
    });

    test((prefix + "export: activate, ExportLayer, deactivate; entries round-trip").c_str(), [&] {
        long act = calls(L"ActivateLayer"), deact = calls(L"DeactivateLayer"), exp = calls(L"ExportLayer");
        std::vector<std::string> order;
        auto got = export_all(b, f.info, "layer1", {f.base_folder}, &order);
        CHECK(calls(L"ActivateLayer") == act + 1);
        CHECK(calls(L"DeactivateLayer") == deact + 1);
        CHECK(calls(L"ExportLayer") == exp + 1);
        CHECK(no_staging_left(f.home));
        std::string hello = "Files/" + kUnicodeName + "/hello.txt";
        CHECK(got.count(hello) == 1);
        CHECK(got[hello].data == "hello");
        CHECK(got[hello].entry.type == EntryType::File);
        CHECK(got[hello].entry.size == 5);
        CHECK(got[hello].entry.security_descriptor == sample_sd());
        CHECK(got[hello].entry.times.last_write == times(kT2).last_write);
        CHECK(got[hello + ":zone"].data == "[ZoneTransfer]");
        CHECK(got[hello + ":zone"].entry.type == EntryType::AlternateStream);
        CHECK(got["Files/big.bin"].data == kBigData);
        CHECK(got["Files/big.bin"].entry.attributes & FILE_ATTRIBUTE_READONLY);
        CHECK(got["Files/" + kUnicodeName].entry.type == EntryType::Directory);
        // Directory times are re-applied after the hard link changed Files/ (the
        // emulator's store reports a folder's times from disk once they changed there).
        CHECK(got["Files/" + kUnicodeName].entry.times.last_write == times(kT2).last_write);
        CHECK(got["Files"].entry.times.last_write == times(kT2).last_write);
        CHECK(got["Files/Windows/win.ini"].entry.type == EntryType::Whiteout);
        CHECK(got["Files/gone.txt"].entry.type == EntryType::Whiteout);
        CHECK(got["Files/empty.txt"].entry.type == EntryType::File && got["Files/empty.txt"].data.empty());
        CHECK(got["Files/ea.txt"].entry.extended_attributes.size() == 1);
        CHECK(got["Files/ea.txt"].entry.extended_attributes[0].first == "USER.WINLAYER");
        CHECK(got["Files/ea.txt"].entry.extended_attributes[0].second == std::string("v\0\x01", 3));
        CHECK(got["Files/hello-link.txt"].entry.type == EntryType::Symlink);
        CHECK(got["Files/hello-link.txt"].entry.link_target == kUnicodeName + "\\hello.txt");
        CHECK(!got["Files/hello-link.txt"].entry.mount_point);
        CHECK(got["Files/junction"].entry.type == EntryType::Symlink);
        CHECK(got["Files/junction"].entry.mount_point);
        CHECK(got["Files/junction"].entry.link_target == "C:\\Windows");
        CHECK(got["Files/junction"].entry.attributes & FILE_ATTRIBUTE_DIRECTORY);
        CHECK(!thread_impersonates());
        // Canonical order: a directory before its children, a file's stream right after it.
        auto pos = [&](const std::string& p) { return std::find(order.begin(), order.end(), p) - order.begin(); };
        CHECK(pos("Files") < pos("Files/" + kUnicodeName));
        CHECK(pos("Files/" + kUnicodeName) < pos(hello));
        CHECK(pos(hello) + 1 == pos(hello + ":zone"));
        CHECK(pos("Files") + 1 == pos("Files/gone.txt"));  // a whiteout right after its folder
    });

    test((prefix + "sandbox: create, prepare, mount path, write, export the diff").c_str(), [&] {
        LayerChain chain = {hcs::layer_folder(f.info, "layer1"), f.base_folder};
        b.create_sandbox_layer(f.info, "sbx", chain.front(), chain);  // as the driver passes it
        CHECK(b.layer_exists(f.info, "sbx"));
        long expands = calls(L"ExpandSandboxSize");
        b.expand_sandbox_size(f.info, "sbx", std::uint64_t(20) << 30);
        CHECK(calls(L"ExpandSandboxSize") == expands + 1);
        b.activate_layer(f.info, "sbx");
        // Not prepared: HCS has no mount path (length 0); the backend answers the folder.
        CHECK(hcs::get_layer_mount_path(f.info, "sbx").empty());
        CHECK(b.get_layer_mount_path(f.info, "sbx") == hcs::layer_folder(f.info, "sbx"));
        b.prepare_layer(f.info, "sbx", chain);
        std::string mount = hcs::get_layer_mount_path(f.info, "sbx");
        CHECK(!mount.empty());
        CHECK(b.get_layer_mount_path(f.info, "sbx") == mount);
        std::wstring m = win::long_path(mount);
        CHECK(read_file(win::join(m, kUnicodeName + "/hello.txt")) == "hello");
        write_file(win::join(m, "new-file.txt"), "written through the mount path");
        // Export of a prepared layer: unprepare, activate, export, deactivate, prepare again.
        long unprep = calls(L"UnprepareLayer"), prep = calls(L"PrepareLayer");
        auto got = export_all(b, f.info, "sbx", chain);
        CHECK(calls(L"UnprepareLayer") == unprep + 1);
        CHECK(calls(L"PrepareLayer") == prep + 1);
        CHECK(got.count("Files/new-file.txt") == 1);
        CHECK(got["Files/new-file.txt"].data == "written through the mount path");
        CHECK(!hcs::get_layer_mount_path(f.info, "sbx").empty());  // prepared again
        b.unprepare_layer(f.info, "sbx");
        b.deactivate_layer(f.info, "sbx");
    });

    test((prefix + "hives through BackupWrite (staging) and BackupRead (export)").c_str(), [&] {
        long writes = calls(L"BackupWrite"), reads = calls(L"BackupRead");
        auto w = b.import_writer(f.info, "layer-hive", {f.base_folder});
        w->add(entry("Files", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
        w->add(entry("Hives", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
        LayerEntry hive = entry("Hives/System_Delta", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2);
        hive.security_descriptor.clear();
        put(*w, hive, "regf system delta");
        put(*w, entry("Files/after-hive.txt", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2), "after");
        w->commit(CommitInfo{"sha256:00", 22, "", {}});
        CHECK(calls(L"BackupWrite") > writes);
        LayerChain chain = {f.base_folder};
        auto got = export_all(b, f.info, "layer-hive", chain);
        CHECK(calls(L"BackupRead") > reads);
        CHECK(got.count("Hives/System_Delta") == 1);
        CHECK(got["Hives/System_Delta"].data == "regf system delta");
        CHECK(got["Files/after-hive.txt"].data == "after");
        CHECK(!thread_impersonates());
        b.destroy_layer(f.info, "layer-hive");
    });

    test((prefix + "base layer through BackupWrite, then ProcessBaseImage; BackupRead gives it back").c_str(), [&] {
        long processed = calls(L"ProcessBaseImage"), adjusts = calls(L"AdjustTokenPrivileges");
        auto w = b.import_writer(f.info, "base-bw", {});
        write_base_files(*w);
        w->commit(CommitInfo{"sha256:00", 0, "", {}});
        CHECK(calls(L"ProcessBaseImage") == processed + 1);
        CHECK(calls(L"AdjustTokenPrivileges") > adjusts);
        CHECK(!thread_impersonates());
        std::wstring folder = win::long_path(hcs::layer_folder(f.info, "base-bw"));
        CHECK(read_file(win::join(folder, "Files/Windows/rich.txt")) == "rich data");
        CHECK(read_file(win::join(folder, "Files/Windows/rich-link.txt")) == "rich data");
        // BackupRead with security: DATA, then the security descriptor, EA and stream
        // BackupWrite kept; the hard link shares them (one NTFS file).
        for (const char* name : {"Files/Windows/rich.txt", "Files/Windows/rich-link.txt"}) {
            std::wstring p = win::join(folder, name);
            win::BackupReadSource src(win::open_file(p, GENERIC_READ, OPEN_EXISTING), p, true);
            std::string stream = read_all(src);
            CHECK(stream.find("rich data") != std::string::npos);
            CHECK(stream.find(sample_sd()) != std::string::npos);
            CHECK(stream.find("ea value") != std::string::npos);
            CHECK(stream.find("[ZoneTransfer]") != std::string::npos);
            std::uint32_t first = 0;
            std::memcpy(&first, stream.data(), 4);
            CHECK(first == 1);  // BACKUP_DATA first, as BackupRead gives it
        }
        {  // without security: no SECURITY record
            std::wstring p = win::join(folder, "Files/Windows/rich.txt");
            win::BackupReadSource src(win::open_file(p, GENERIC_READ, OPEN_EXISTING), p, false);
            std::string stream = read_all(src);
            CHECK(stream.find(sample_sd()) == std::string::npos);
            CHECK(stream.find("ea value") != std::string::npos);
        }
        win::remove_tree(folder);
        forget_backup_records();
    });

    // The base layer of the next three tests, written through the base writer.
    std::string uvm_base;
    test((prefix + "base layer through the base writer: export (BackupRead of hives and UtilityVM), re-import, same content").c_str(), [&] {
        long processed = calls(L"ProcessBaseImage"), utility = calls(L"ProcessUtilityImage"),
             exports = calls(L"ExportLayer"), reads = calls(L"BackupRead");
        write_base_layer(b, f, "base-uvm");
        uvm_base = hcs::layer_folder(f.info, "base-uvm");
        CHECK(calls(L"ProcessBaseImage") == processed + 1);
        CHECK(calls(L"ProcessUtilityImage") == utility + 1);
        // The boot files ProcessUtilityImage rewrites are saved for the original tar.
        CHECK(read_file(win::join(win::long_path(uvm_base), "bcd.bak")) == "bcd store BCD");
        std::vector<std::string> order;
        auto first = export_all(b, f.info, "base-uvm", {}, &order);
        CHECK(calls(L"ExportLayer") == exports + 1);
        CHECK(calls(L"BackupRead") > reads);
        CHECK(no_staging_left(f.home));
        CHECK(!thread_impersonates());
        const auto& rich = first.at("Files/Windows/rich.txt");
        CHECK(rich.data == "rich data");
        CHECK(rich.entry.security_descriptor == sample_sd());
        CHECK(rich.entry.extended_attributes.size() == 1);
        CHECK(rich.entry.extended_attributes[0].second == "ea value");
        CHECK(rich.entry.times.last_write == times(kT1).last_write);
        CHECK(first.at("Files/Windows/rich.txt:zone").data == "[ZoneTransfer]");
        // ExportLayer writes a hard link's second name as a copy of the file.
        CHECK(first.at("Files/Windows/rich-link.txt").data == "rich data");
        CHECK(first.at("Files/Windows/rich-link.txt").entry.security_descriptor == sample_sd());
        CHECK(first.at("Files/Windows/System32/config/SAM").data == "hive SAM");
        CHECK(first.at("Files/Windows").entry.type == EntryType::Directory);
        CHECK(first.at("Files/Windows").entry.security_descriptor == sample_sd());
        // Hives and the utility VM come back through BackupRead without security.
        CHECK(first.at("Hives/System_Delta").data == "regf System_Delta");
        CHECK(first.at("Hives/System_Delta").entry.security_descriptor.empty());
        // ProcessUtilityImage rewrote the boot files; the original export's payloads are
        // the bytes the tar had, from bcd*.bak.
        CHECK(first.at(boot_file("BCD.LOG2")).data == processed_for("base-uvm", "bcd store BCD.LOG2"));
        {
            auto src = b.payloads(f.info, "base-uvm", {})->open(boot_file("BCD"), 13);
            CHECK(read_all(*src) == "bcd store BCD");
        }
        const auto& kernel = first.at("UtilityVM/Files/Windows/kernel.sys");
        CHECK(kernel.data == "utility vm kernel");
        CHECK(kernel.entry.extended_attributes.size() == 1);
        CHECK(kernel.entry.extended_attributes[0].second == "uvm ea");
        CHECK(kernel.entry.times.last_write == times(kT1).last_write);
        CHECK(first.at("UtilityVM/Files/Windows").entry.type == EntryType::Directory);
        // The export, imported again as a base layer, exports the same.
        reimport(b, f.info, "base-uvm-again", {}, first, order);
        auto second = export_all(b, f.info, "base-uvm-again", {});
        check_same(first, second, "base-uvm", "base-uvm-again");
        CHECK(!thread_impersonates());
        b.destroy_layer(f.info, "base-uvm-again");
    });

    test((prefix + "delta layer whose UtilityVM changes: clone, ProcessUtilityImage, export, re-import, same content").c_str(), [&] {
        CHECK(!uvm_base.empty());
        long utility = calls(L"ProcessUtilityImage"), writes = calls(L"BackupWrite"), reads = calls(L"BackupRead");
        std::wstring parent = win::long_path(uvm_base);
        std::string parent_log = read_file(win::join(parent, boot_file("BCD.LOG")));
        CHECK(parent_log == processed_for("base-uvm", "bcd store BCD.LOG"));
        {
            auto w = b.import_writer(f.info, "delta-uvm", {uvm_base});
            w->add(entry("Files", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
            put(*w, entry("Files/delta.txt", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2), "delta file");
            // The utility VM: cloned from the parent (hard links; folders and BCD files
            // copied with BackupRead/BackupWrite), then changed in place.
            w->add(entry("UtilityVM", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
            w->add(entry("UtilityVM/Files", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
            put(*w, entry(boot_file("BCD"), EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2),
                "bcd store of the delta");
            LayerEntry hal = entry("UtilityVM/Files/Windows/hal.sys", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2);
            hal.extended_attributes = {{"USER.UVM", "changed"}};
            put(*w, hal, "utility vm hal, patched");
            put(*w, entry("UtilityVM/Files/Windows/new.sys", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2), "new driver");
            w->add_link("UtilityVM/Files/Windows/kernel-link.sys", "UtilityVM/Files/Windows/kernel.sys");
            w->commit(CommitInfo{"sha256:00", 0, "", {}});
        }
        CHECK(calls(L"ProcessUtilityImage") == utility + 1);
        CHECK(calls(L"BackupRead") > reads);  // the clone's copies
        CHECK(calls(L"BackupWrite") > writes);
        CHECK(!thread_impersonates());
        CHECK(no_staging_left(f.home));
        std::wstring delta = win::long_path(hcs::layer_folder(f.info, "delta-uvm"));
        CHECK(read_file(win::join(delta, "bcd.bak")) == "bcd store of the delta");
        // The clone's copy of the parent's processed file.
        CHECK(read_file(win::join(delta, "bcd.log1.bak")) == processed_for("base-uvm", "bcd store BCD.LOG1"));
        // ProcessUtilityImage rewrote the delta's boot files in place, the cloned ones too;
        // the parent's are untouched: the clone copied them, it did not link them.
        CHECK(read_file(win::join(delta, boot_file("BCD.LOG"))) == processed_for("delta-uvm", "bcd store BCD.LOG"));
        CHECK(read_file(win::join(parent, boot_file("BCD.LOG"))) == parent_log);
        CHECK(read_file(win::join(parent, "UtilityVM/Files/Windows/hal.sys")) == "utility vm hal");
        std::vector<std::string> order;
        auto first = export_all(b, f.info, "delta-uvm", {uvm_base}, &order);
        // The utility VM's folders keep the tar's times, not the clone's.
        CHECK(first.at("UtilityVM").entry.times.last_write == times(kT2).last_write);
        CHECK(first.at("UtilityVM/Files").entry.times.last_write == times(kT2).last_write);
        CHECK(first.at("UtilityVM/Files/Windows").entry.times.last_write == times(kT1).last_write);
        CHECK(first.at("Files/delta.txt").data == "delta file");
        CHECK(first.at("Files/delta.txt").entry.security_descriptor == sample_sd());
        CHECK(first.at(boot_file("BCD")).data == processed_for("delta-uvm", "bcd store of the delta"));
        CHECK(first.at(boot_file("BCD.LOG")).data == processed_for("delta-uvm", "bcd store BCD.LOG"));
        CHECK(first.at("UtilityVM/Files/Windows/hal.sys").data == "utility vm hal, patched");
        CHECK(first.at("UtilityVM/Files/Windows/hal.sys").entry.extended_attributes[0].second == "changed");
        CHECK(first.at("UtilityVM/Files/Windows/new.sys").data == "new driver");
        // Cloned from the parent, with the records BackupWrite kept there.
        CHECK(first.at("UtilityVM/Files/Windows/kernel.sys").data == "utility vm kernel");
        CHECK(first.at("UtilityVM/Files/Windows/kernel.sys").entry.extended_attributes[0].second == "uvm ea");
        CHECK(first.at("UtilityVM/Files/Windows/kernel-link.sys").data == "utility vm kernel");
        reimport(b, f.info, "delta-uvm-again", {uvm_base}, first, order);
        auto second = export_all(b, f.info, "delta-uvm-again", {uvm_base});
        check_same(first, second, "delta-uvm", "delta-uvm-again");
        CHECK(!thread_impersonates());
        for (const char* id : {"delta-uvm-again", "delta-uvm"}) b.destroy_layer(f.info, id);
    });

    test((prefix + "a failed ProcessBaseImage or ProcessUtilityImage leaves nothing behind").c_str(), [&] {
        CHECK(!uvm_base.empty());
        set_fail("ProcessBaseImage:0x80070005");
        Error base = expect_error([&] { write_base_layer(b, f, "base-fail"); });
        set_fail("");
        CHECK(base.operation == "ProcessBaseImage");
        CHECK(base.kind == ErrorKind::Win32 && base.code == 5);
        CHECK(!win::exists(win::long_path(hcs::layer_folder(f.info, "base-fail"))));
        std::wstring parent = win::long_path(uvm_base);
        std::string parent_bcd = read_file(win::join(parent, boot_file("BCD")));
        set_fail("ProcessUtilityImage:0x80370100");
        Error uvm = expect_error([&] {
            auto w = b.import_writer(f.info, "delta-fail", {uvm_base});
            w->add(entry("Files", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
            w->add(entry("UtilityVM", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
            put(*w, entry("UtilityVM/Files/Windows/new.sys", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2), "new");
            w->commit(CommitInfo{"sha256:00", 0, "", {}});
        });
        set_fail("");
        CHECK(uvm.operation == "ProcessUtilityImage");
        CHECK(uvm.kind == ErrorKind::Hresult && uvm.code == 0x80370100u);
        // Imported, then destroyed: neither the layer nor its folder nor a work folder stays.
        CHECK(!b.layer_exists(f.info, "delta-fail"));
        CHECK(!win::exists(win::long_path(hcs::layer_folder(f.info, "delta-fail"))));
        CHECK(no_staging_left(f.home));
        CHECK(read_file(win::join(parent, boot_file("BCD"))) == parent_bcd);
        CHECK(!thread_impersonates());
    });

    test((prefix + "sandbox on the base writer's layer: prepare, activate, mount, write, export the diff").c_str(), [&] {
        CHECK(!uvm_base.empty());
        LayerChain chain = {uvm_base};
        b.create_sandbox_layer(f.info, "sbx-uvm", uvm_base, chain);
        b.activate_layer(f.info, "sbx-uvm");
        b.prepare_layer(f.info, "sbx-uvm", chain);
        std::string mount = hcs::get_layer_mount_path(f.info, "sbx-uvm");
        CHECK(!mount.empty());
        std::wstring m = win::long_path(mount);
        CHECK(read_file(win::join(m, "Windows/rich.txt")) == "rich data");
        CHECK(read_file(win::join(m, "Windows/System32/config/SYSTEM")) == "hive SYSTEM");
        write_file(win::join(m, "Windows/sandbox.txt"), "written in the sandbox");
        auto got = export_all(b, f.info, "sbx-uvm", chain);
        CHECK(got.at("Files/Windows/sandbox.txt").data == "written in the sandbox");
        CHECK(got.count("Files/Windows/rich.txt") == 0);  // the diff only
        CHECK(!hcs::get_layer_mount_path(f.info, "sbx-uvm").empty());  // prepared again
        b.unprepare_layer(f.info, "sbx-uvm");
        b.deactivate_layer(f.info, "sbx-uvm");
        for (const char* id : {"sbx-uvm", "base-uvm"}) b.destroy_layer(f.info, id);
        forget_backup_records();
    });

    test((prefix + "a failed import leaves nothing behind").c_str(), [&] {
        set_fail("ImportLayer:0x80370112");
        Error e = expect_error([&] { write_layer(b, f, "layer-bad"); });
        set_fail("");
        CHECK(e.kind == ErrorKind::Hresult);
        CHECK(e.code == 0x80370112u);
        CHECK(e.operation == "ImportLayer");
        CHECK(e.path == hcs::layer_folder(f.info, "layer-bad"));
        CHECK(!b.layer_exists(f.info, "layer-bad"));
        CHECK(no_staging_left(f.home));
        // Abandoned without commit: the staging folder goes too.
        {
            auto w = b.import_writer(f.info, "layer-abandoned", {f.base_folder});
            w->tar_split_sink()->write(reinterpret_cast<const std::uint8_t*>("partial"), 7);
            w->add(entry("Files", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
            put(*w, entry("Files/x.txt", EntryType::File, FILE_ATTRIBUTE_ARCHIVE, kT2), "x");
        }
        CHECK(no_staging_left(f.home));
        CHECK(!b.layer_exists(f.info, "layer-abandoned"));
        // A base layer is written with BackupWrite into its own folder: a failure (here no
        // registry hives) removes it.
        {
            auto w = b.import_writer(f.info, "base-bad", {});
            CHECK(win::exists(win::long_path(hcs::layer_folder(f.info, "base-bad"))));
            w->add(entry("Files", EntryType::Directory, FILE_ATTRIBUTE_DIRECTORY, kT2));
            Error h = expect_error([&] { w->commit(CommitInfo{"sha256:00", 0, "", {}}); });
            CHECK(h.kind == ErrorKind::InvalidLayer);
        }
        CHECK(!win::exists(win::long_path(hcs::layer_folder(f.info, "base-bad"))));
        CHECK(!thread_impersonates());
        // A hard link whose target is nowhere is refused with the entry named.
        auto w = b.import_writer(f.info, "layer-badlink", {f.base_folder});
        Error l = expect_error([&] { w->add_link("Files/a.exe", "Files/missing.exe"); });
        CHECK(l.kind == ErrorKind::InvalidLayer);
        CHECK(l.entry == "Files/a.exe");
        w->abort();
        CHECK(no_staging_left(f.home));
    });

    test((prefix + "a failed export restores the layer's state").c_str(), [&] {
        LayerChain chain = {hcs::layer_folder(f.info, "layer1"), f.base_folder};
        b.activate_layer(f.info, "sbx");
        b.prepare_layer(f.info, "sbx", chain);
        long deact = calls(L"DeactivateLayer"), prep = calls(L"PrepareLayer");
        set_fail("ExportLayer:0x80070070");
        Error e = expect_error([&] { export_all(b, f.info, "sbx", chain); });
        set_fail("");
        CHECK(e.kind == ErrorKind::Win32);
        CHECK(e.code == 112);  // ERROR_DISK_FULL, folded from FACILITY_WIN32
        CHECK(e.operation == "ExportLayer");
        CHECK(calls(L"DeactivateLayer") == deact + 1);
        CHECK(calls(L"PrepareLayer") == prep + 1);
        CHECK(!hcs::get_layer_mount_path(f.info, "sbx").empty());
        CHECK(no_staging_left(f.home));
        b.unprepare_layer(f.info, "sbx");
        b.deactivate_layer(f.info, "sbx");
    });

    test((prefix + "DriverInfo with an empty home and the layer path as id").c_str(), [&] {
        DriverInfo bare{Flavour::Filter, ""};
        std::string path = hcs::layer_folder(f.info, "layer1");
        CHECK(b.layer_exists(bare, path));
        CHECK(hcs::layer_folder(bare, path) == path);
    });

    test((prefix + "sweep removes dead work folders, not live ones").c_str(), [&] {
        std::wstring dead = f.home + L"\\.winlayer-import-layer9-0badf00d";
        std::wstring live = f.home + L"\\.winlayer-export-layer8-00c0ffee";
        win::create_directories(dead + L"\\Files");
        win::create_directories(live);
        win::Handle lock(CreateFileW((live + L".lock").c_str(), GENERIC_READ | GENERIC_WRITE | DELETE, 0, nullptr,
                                     CREATE_NEW, FILE_FLAG_DELETE_ON_CLOSE, nullptr));
        CHECK(static_cast<bool>(lock));
        std::vector<std::string> swept = b.sweep(f.info);
        CHECK(swept == std::vector<std::string>{".winlayer-import-layer9-0badf00d"});
        CHECK(!win::exists(dead));
        CHECK(win::exists(live));
        lock.reset();
        CHECK(b.sweep(f.info) == std::vector<std::string>{".winlayer-export-layer8-00c0ffee"});
        CHECK(no_staging_left(f.home));
    });

    test((prefix + "destroy every layer; nothing is left").c_str(), [&] {
        for (const char* id : {"sbx", "layer1", "base"}) {
            b.destroy_layer(f.info, id);
            CHECK(!b.layer_exists(f.info, id));
        }
        CHECK(visible_entries(f.home).empty());
    });
}

void api_tests() {
    auto backend = make_vmcompute_backend();
    Backend& b = *backend;
    DriverInfo info{Flavour::Filter, "C:\\nowhere"};

    test("NameToGuid is deterministic and formatted as a GUID", [&] {
        std::string a = b.name_to_guid("layer-a"), a2 = b.name_to_guid("layer-a"), c = b.name_to_guid("layer-c");
        CHECK(a == a2);
        CHECK(a != c);
        CHECK(a.size() == 36 && a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
        CHECK(hcs::guid_to_string(hcs::name_to_guid("layer-a")) == a);
    });

    test("GetBaseImages returns the JSON (buffer freed with CoTaskMemFree)", [&] {
        std::string json = b.get_base_images();
        CHECK(json.find("\"Images\"") != std::string::npos);
    });

    test("FACILITY_WIN32 HRESULTs fold to Win32 codes, with operation and path", [&] {
        set_fail("DestroyLayer:0x80070005");
        Error e = expect_error([&] { b.destroy_layer(info, "x"); });
        set_fail("");
        CHECK(e.kind == ErrorKind::Win32);
        CHECK(e.code == 5);
        CHECK(e.operation == "DestroyLayer");
        CHECK(e.path == "C:\\nowhere\\x");
    });

    test("HCS HRESULTs (0x8037xxxx) stay HRESULTs", [&] {
        set_fail("ActivateLayer:0x80370112");
        Error e = expect_error([&] { b.activate_layer(info, "x"); });
        set_fail("");
        CHECK(e.kind == ErrorKind::Hresult);
        CHECK(e.code == 0x80370112u);
        CHECK(e.operation == "ActivateLayer");
    });

    test("S_FALSE is success", [&] {
        set_fail("NameToGuid:0x1");
        long before = calls(L"NameToGuid");
        std::string guid = b.name_to_guid("layer-a");
        set_fail("");
        CHECK(calls(L"NameToGuid") == before + 1);
        CHECK(guid == b.name_to_guid("layer-a"));
    });

    test("GrantVmAccess, ProcessBaseImage, ProcessUtilityImage carry their path in errors", [&] {
        set_fail("GrantVmAccess:0x80070005,ProcessBaseImage:0x80070002,ProcessUtilityImage:0x80370100");
        Error g = expect_error([&] { b.grant_vm_access("vm-1", "C:\\nowhere\\disk.vhdx"); });
        Error p = expect_error([&] { b.process_base_image("C:\\nowhere\\base"); });
        Error u = expect_error([&] { b.process_utility_image("C:\\nowhere\\base\\UtilityVM"); });
        set_fail("");
        CHECK(g.kind == ErrorKind::Win32 && g.code == 5 && g.path == "C:\\nowhere\\disk.vhdx");
        CHECK(p.kind == ErrorKind::Win32 && p.code == 2 && p.operation == "ProcessBaseImage");
        CHECK(p.path == "C:\\nowhere\\base");
        CHECK(u.kind == ErrorKind::Hresult && u.code == 0x80370100u && u.operation == "ProcessUtilityImage");
    });

    test("a layer id that is not a folder name is refused before HCS sees it", [&] {
        long before = calls(L"ActivateLayer");
        for (const char* bad : {"..", "..\\x", "a/b", "C:x", ""}) {
            Error e = expect_error([&] { b.activate_layer(info, bad); });
            CHECK(e.kind == ErrorKind::InvalidArgument);
        }
        CHECK(calls(L"ActivateLayer") == before);
    });

    test("PrepareLayer retries ERROR_NOT_READY (2 failures, then success)", [&] {
        set_fail("PrepareLayer:0x80070015:2,UnprepareLayer:0x1");
        long before = calls(L"PrepareLayer");
        Error e = expect_error([&] { b.prepare_layer(info, "x", {}); });  // 3rd call reaches the backend
        set_fail("");
        CHECK(calls(L"PrepareLayer") == before + 3);
        CHECK(e.operation == "PrepareLayer");  // the layer does not exist: the real answer
        CHECK(!(e.kind == ErrorKind::Win32 && e.code == 21));
    });

    test("ActivateLayer retries ERROR_DEVICE_NOT_CONNECTED 5 times, then fails", [&] {
        set_fail("ActivateLayer:0x8007048F");
        long before = calls(L"ActivateLayer");
        DWORD start = GetTickCount();
        Error e = expect_error([&] { b.activate_layer(info, "x"); });
        DWORD elapsed = GetTickCount() - start;
        set_fail("");
        CHECK(calls(L"ActivateLayer") == before + 5);
        CHECK(e.kind == ErrorKind::Win32 && e.code == 1167);
        CHECK(elapsed >= 350);  // four 100 ms pauses
    });

    test("other failures are not retried", [&] {
        set_fail("PrepareLayer:0x80070005:1");
        long before = calls(L"PrepareLayer");
        Error e = expect_error([&] { b.prepare_layer(info, "x", {}); });
        set_fail("");
        CHECK(calls(L"PrepareLayer") == before + 1);
        CHECK(e.kind == ErrorKind::Win32 && e.code == 5);
    });
}

}  // namespace

int wmain(int argc, wchar_t** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: wine_test.exe <emulator vmcompute.dll> <work folder>\n");
        return 2;
    }
    std::wstring emulator = argv[1], work = argv[2];
    wchar_t sys[MAX_PATH];
    GetSystemDirectoryW(sys, MAX_PATH);
    std::wstring installed = std::wstring(sys) + L"\\vmcompute.dll";
    DeleteFileW(installed.c_str());
    // The emulator's GetBaseImages lists this folder (empty: {"Images":[]}).
    std::wstring base_images = win::long_path(work + L"\\base-images");
    win::create_directories(base_images);
    SetEnvironmentVariableW(L"HCS_EMULATOR_BASE_IMAGES", base_images.c_str());
    // Where the Backup API emulation keeps what BackupWrite restores besides the data.
    std::wstring backup_store = win::long_path(work + L"\\backup-store");
    win::create_directories(backup_store);
    SetEnvironmentVariableW(L"HCS_EMULATOR_BACKUP_STORE", backup_store.c_str());

    test("without vmcompute.dll in System32: BackendUnavailable with the fix (a copy beside the exe is ignored)", [&] {
        Error e = expect_error([] { make_vmcompute_backend(); });
        CHECK(e.kind == ErrorKind::BackendUnavailable);
        CHECK(std::strstr(e.what(), "Enable-WindowsOptionalFeature -Online -FeatureName Containers") != nullptr);
    });

    if (!CopyFileW(emulator.c_str(), installed.c_str(), FALSE)) {
        std::printf("FAIL cannot install the emulator in System32 (Win32 error %lu)\n", GetLastError());
        return 1;
    }
    api_tests();
    scenario("short ASCII home", win::long_path(work + L"\\home"));
    // Over 300 characters, with non-ASCII names: every path goes through `\\?\`.
    std::wstring deep = win::long_path(work) + L"\\" + win::widen("h\xc3\xb6me-\xe6\x95\xb0\xe6\x8d\xae");
    for (int i = 0; deep.size() < 320; ++i) deep += L"\\" + std::wstring(60, static_cast<wchar_t>(L'a' + i));
    scenario("300+ character Unicode home", deep);

    // Every vmcompute export and every Backup API call the backend makes, with how often
    // the run reached it (tests/test_wine.py fails when one is 0).
    for (const wchar_t* op : {L"ActivateLayer", L"CreateLayer", L"CreateSandboxLayer", L"DeactivateLayer",
                              L"DestroyLayer", L"ExpandSandboxSize", L"ExportLayer", L"GetBaseImages",
                              L"GetLayerMountPath", L"GrantVmAccess", L"ImportLayer", L"LayerExists", L"NameToGuid",
                              L"PrepareLayer", L"ProcessBaseImage", L"ProcessUtilityImage", L"UnprepareLayer",
                              L"BackupRead", L"BackupWrite", L"OpenThreadToken", L"ImpersonateSelf", L"RevertToSelf",
                              L"LookupPrivilegeValueW", L"AdjustTokenPrivileges"})
        std::printf("calls %s %ld\n", win::narrow(op).c_str(), calls(op));
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
