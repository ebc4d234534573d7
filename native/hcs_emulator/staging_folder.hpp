// The HCS legacy import/export folder, as the emulator's ImportLayer reads it and its
// ExportLayer writes it (REFERENCE.md section 2): `Files\<path>` = 4-byte little-endian
// attributes + Win32 backup stream, directories plus `<dir>.$wcidirs$`, raw `Hives\*`,
// `tombstones.txt`. Wine has no BackupRead/BackupWrite, so the backup streams are
// encoded and decoded here with the core codec, and hives are plain files.
// Test-only: this is the counterpart the Windows layer writer and reader are checked
// against, written from the format description, not from their code.
#pragma once

#include <string>

#include "core/layer.hpp"

namespace winlayer::emulator {

// Feeds every entry of the folder at `folder` (a Win32 path) to `writer`, then commits.
void import_folder(const std::wstring& folder, LayerWriter& writer);

// Feeds the Files\ and Hives\ of a layer folder written in place with BackupWrite (the
// base writer's) to `writer`, then commits, and gives the files of the new layer folder
// `layer` the records BackupWrite kept for the originals (ProcessBaseImage; the
// UtilityVM\ is ProcessUtilityImage's, below).
void import_written_folder(const std::wstring& written, LayerWriter& writer, const std::wstring& layer);

// What ProcessUtilityImage does to the four boot files of the layer at `layer` (those
// present), in place: a first line "HCS emulator: processed for <layer folder name>" (an
// earlier one replaced), as the real call rewrites the BCD store for the layer.
void rewrite_boot_files(const std::string& layer);

// Records the UtilityVM folder of the layer at `layer` (a portable backend layer folder),
// written in place with BackupWrite, in the layer's metadata, replacing what was recorded
// of it before (ProcessUtilityImage: the utility VM is complete then).
void record_utility_vm(const std::string& layer);

// Writes every entry `reader` yields into `folder` (which must exist and be empty).
void export_folder(LayerReader& reader, const std::wstring& folder);

}  // namespace winlayer::emulator
