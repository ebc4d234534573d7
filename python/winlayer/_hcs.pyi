# Type stubs for the native module winlayer._hcs. tests/test_stubs.py fails when these
# and the module's real attributes differ.

__version__: str

def _raise_error(kind: str, code: int, operation: str, path: str) -> None: ...
