# Type stubs for the native module winlayer._hcs. tests/test_stubs.py fails when these
# and the module's real attributes differ. One section per binding file.

__version__: str

# --- hcs_bridge.cpp ---

def _raise_error(kind: str, code: int, operation: str, path: str) -> None: ...

# --- native/bridge/codec.cpp ---

# --- native/bridge/backends.cpp ---
