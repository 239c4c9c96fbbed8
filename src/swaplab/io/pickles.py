"""Pickles of numpy arrays read without running code: an unpickler that admits numpy arrays, dtypes and plain
containers (dict, list, tuple, str, numbers) and refuses every other global a pickle names."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from swaplab.errors import UnsafeCheckpointError


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def _scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar as fn
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar as fn
    return fn


# (module, name) a numpy-array pickle refers to -> the object; nothing else can be looked up
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _encode,  # how protocol 2 stores bytes (str -> latin-1 bytes only)
}


def _encode(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin-1 text only")
    return text.encode("latin1")


class ArrayUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose `find_class` returns only numpy's array reconstruction helpers."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]()
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed (numpy arrays and plain data only)")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _check_plain(obj: Any, where: str = "") -> None:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafeCheckpointError(f"array {where or '<root>'} has an object dtype")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, f"{where}[{k!r}]")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, (str, bytes, int, float, bool, complex, type(None), np.generic, np.dtype)):
        raise UnsafeCheckpointError(f"{where or '<root>'} is a {type(obj).__name__}, not plain data")


def load_array_pickle(source: str | Path | bytes) -> Any:
    """Unpickle numpy arrays in plain containers from a file path or bytes; any other object named by the
    pickle (a function, a class, `os.system`, ...) is refused before it could run (UnsafeCheckpointError)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        obj = ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, AttributeError, EOFError, TypeError, ValueError) as err:
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise UnsafeCheckpointError(f"{name}: refused ({err})") from err
    _check_plain(obj)
    return obj
