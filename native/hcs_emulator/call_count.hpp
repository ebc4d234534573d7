// The emulator's per-call counts (HcsEmulatorCallCount reads them): every vmcompute
// export and every Backup API emulation call counts itself here.
#pragma once

namespace winlayer::emulator {

void count_call(const char* name);

}  // namespace winlayer::emulator
