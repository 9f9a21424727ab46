"""Reading the field's pickles (SMPL models, 3DPW and EMDB annotations, BEDLAM labels) without running code.

`load_pickle` unpickles with a fixed table of globals and imports nothing the table does not name: numpy's
array, scalar and dtype constructors, plain containers, and two kinds of foreign objects that the SMPL files
hold, rebuilt as inert stand-ins: scipy sparse matrices (`Sparse`, the SMPL joint regressor) and chumpy arrays
(`Chumpy`, the arrays of the v1.0 SMPL files). `to_array` turns either into a numpy array. Everything else
(os.system, eval, an arbitrary class) is refused before it can be called. The opcode stream is checked first
(`human3r_jax.converters.torch_zip._check_pickle`: depth, memo and opcode-count bombs), so a crafted file fails cleanly.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# numpy's pickled arrays need only these (numpy 1.x and 2.x module names; protocol 5 uses _frombuffer)
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_BUILTINS = {"object": object, "dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
MAX_DENSE = 200_000_000  # elements a stand-in may expand to (the SMPL regressor: 24 × 6890)


class Sparse:
    """A scipy sparse matrix (CSC/CSR/COO) as pickled: its attributes only."""

    fmt = ""

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


_SPARSE = {f"{f}_matrix": type(f"Sparse{f.upper()}", (Sparse,), {"fmt": f}) for f in ("csc", "csr", "coo")}


class Chumpy:
    """A chumpy array as pickled: its value is the `x` attribute."""

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Protocol < 3 pickles spell bytes as _codecs.encode(text, 'latin1'); nothing else is allowed."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _reconstructor(cls, base, state):
    """copyreg._reconstructor, for the stand-ins only (how protocol-2 pickles make plain objects)."""
    if cls not in (*_SPARSE.values(), Chumpy) or base is not object or state is not None:
        raise pickle.UnpicklingError("refusing copyreg._reconstructor of anything but a sparse or chumpy array")
    return cls.__new__(cls)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _reconstructor
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module.startswith("scipy.sparse") and name in _SPARSE:
            return _SPARSE[name]
        if module.startswith("chumpy") and name == "Ch":
            return Chumpy
        if (module, name) not in _NUMPY:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module("numpy._core." + module[len("numpy.core.") :]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def load_pickle(path: str | Path, error: type[Exception], *, encoding: str = "ASCII") -> Any:
    """Unpickle `path` safely; any failure is `error("<path>: …")`. encoding: "latin1" for Python-2 pickles
    holding numpy arrays (3DPW, SMPL)."""
    from human3r_jax.converters.torch_zip import _check_pickle

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        _check_pickle(data)
        return _Unpickler(io.BytesIO(data), encoding=encoding).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
    ) as e:
        raise error(f"{path}: not a readable pickle of arrays ({e})") from None


def to_array(obj: Any, where: str, error: type[Exception]) -> np.ndarray:
    """A numpy array from an array, a chumpy stand-in or a sparse stand-in (made dense); `where` names the
    file and key in the error."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, Chumpy):
        x = obj.state.get("x")
        if not isinstance(x, np.ndarray):
            raise error(f"{where}: a chumpy array without its value")
        return x
    if isinstance(obj, Sparse):
        return _dense(obj.state, obj.fmt, where, error)
    raise error(f"{where}: expected an array, found {type(obj).__name__}")


def _dense(s: dict, fmt: str, where: str, error: type[Exception]) -> np.ndarray:
    shape = s.get("_shape", s.get("shape"))
    try:
        rows, cols = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise error(f"{where}: a sparse matrix without a valid shape") from None
    if rows < 0 or cols < 0 or rows * cols > MAX_DENSE:
        raise error(f"{where}: a sparse matrix of shape {rows}×{cols} is too large")
    data = s.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 1 or data.dtype.kind not in "iuf":
        raise error(f"{where}: a sparse matrix without numeric data")
    out = np.zeros((rows, cols), np.float64)
    if fmt == "coo":
        coords = s.get("coords")
        r, c = coords if isinstance(coords, tuple) and len(coords) == 2 else (s.get("row"), s.get("col"))
        if not (isinstance(r, np.ndarray) and isinstance(c, np.ndarray) and len(r) == len(c) == len(data)):
            raise error(f"{where}: a COO matrix with inconsistent row/col/data")
        if len(r) and (r.min() < 0 or r.max() >= rows or c.min() < 0 or c.max() >= cols):
            raise error(f"{where}: a COO matrix indexing outside its shape")
        np.add.at(out, (r.astype(np.int64), c.astype(np.int64)), data)
        return out
    indices, indptr = s.get("indices"), s.get("indptr")
    major = cols if fmt == "csc" else rows
    minor = rows if fmt == "csc" else cols
    if not (
        isinstance(indices, np.ndarray)
        and isinstance(indptr, np.ndarray)
        and len(indptr) == major + 1
        and len(indices) == len(data)
    ):
        raise error(f"{where}: a {fmt.upper()} matrix with inconsistent indices/indptr/data")
    indptr = indptr.astype(np.int64)
    if indptr[0] != 0 or indptr[-1] != len(data) or (np.diff(indptr) < 0).any():
        raise error(f"{where}: a {fmt.upper()} matrix with a bad indptr")
    if len(indices) and (indices.min() < 0 or indices.max() >= minor):
        raise error(f"{where}: a {fmt.upper()} matrix indexing outside its shape")
    major_idx = np.repeat(np.arange(major), np.diff(indptr))
    if fmt == "csc":
        np.add.at(out, (indices.astype(np.int64), major_idx), data)
    else:
        np.add.at(out, (major_idx, indices.astype(np.int64)), data)
    return out
