// Sandboxes (read-write layers): the merged view of the parent chain that
// get_layer_mount_path returns once prepared, and the sandbox's diff for export.
//
// Two ways to show the view at <sandbox>/view, chosen at the first prepare and kept for
// the sandbox's life (recorded in <sandbox>/winlayer.view):
//   overlay  overlayfs over the parents' Files/ folders (nearest first), with a folder of
//            overlayfs whiteouts ("shims") under each parent that has tombstones; the
//            changes land in <sandbox>/upper. Needs the right to mount (root, or root in a
//            user namespace); the mount exists in the mount namespace of the process.
//   copy     a materialized copy of the merged chain (reflinked where the filesystem can);
//            a change is a file whose size, modification time or inode change time says
//            it was written after the copy was made.
// WINLAYER_PORTABLE_MOUNT=copy|overlay forces one; unset (or "auto") tries overlay first.
#pragma once

#include <memory>
#include <string>

#include "../core/backend.hpp"
#include "store.hpp"

namespace winlayer::portable {

constexpr const char* kViewModeFile = "winlayer.view";
// Marks a sandbox made by create_view_layer: its overlay view has no upper folder, so the
// kernel refuses every write (EROFS). Its copy view is an ordinary copy.
constexpr const char* kReadOnlyViewFile = "winlayer.readonly";
constexpr std::uint64_t kDefaultSandboxSize = std::uint64_t(20) << 30;  // HCS's default

void prepare_sandbox(const LayerRef& ref, const LayerChain& parents);
void unprepare_sandbox(const LayerRef& ref);
bool view_mounted(const LayerRef& ref);

// The sandbox's changes against its parent chain as a layer: additions, modifications
// (with the parent's Windows metadata kept), deletions as whiteouts. New entries get
// default Windows metadata (attributes 16/32, owner and group BUILTIN\Administrators,
// times from the file). Fails with ENOSPC when the changes exceed the size limit.
std::unique_ptr<LayerReader> sandbox_diff_reader(const LayerRef& ref, const LayerChain& parents);

}  // namespace winlayer::portable
