"""Read a PyTorch `.pth` checkpoint without PyTorch and without running code from the file.

A `torch.save` file is a zip holding `<root>/data.pkl` (the pickled object) and one raw
little-endian file per storage, `<root>/data/<key>`. The pickle is read by an unpickler whose
`find_class` never imports anything: the few globals it understands (tensor rebuilding, storage
types, plain containers) are mapped to local functions, and every other global becomes an inert
placeholder that only records its arguments. So OmegaConf configs, numpy scalars or anything else a
training script pickled beside the weights load as data, and nothing from the file is executed.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # bfloat16 storages
    from ml_dtypes import bfloat16 as _bf16
except ImportError:  # pragma: no cover - ml_dtypes ships with jax
    _bf16 = None


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not hold what is expected."""


STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": _bf16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class Opaque:
    """Stand-in for a pickled object of a class we do not import (OmegaConf nodes, …): it keeps the
    constructor arguments, the BUILD state and any items, and does nothing else."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items = args, None, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):  # pickle BUILD
        self.state = state

    def __setitem__(self, k, v):  # SETITEMS on an unknown mapping type
        self.items.append((k, v))

    def append(self, v):  # APPENDS on an unknown list type
        self.items.append(v)

    def extend(self, vs):
        self.items.extend(vs)

    def __repr__(self):
        return f"Opaque({self.qualname})"


_OPAQUE_TYPES: dict[str, type] = {}


def _opaque_class(qualname: str) -> type:
    if qualname not in _OPAQUE_TYPES:
        _OPAQUE_TYPES[qualname] = type("Opaque", (Opaque,), {"qualname": qualname})
    return _OPAQUE_TYPES[qualname]


class _SafeDefaultDict(collections.defaultdict):
    """defaultdict whose factory may only be a plain container type."""

    def __init__(self, factory=None, *args):
        super().__init__(factory if factory in (dict, list, set, int, float) else None, *args)


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    dtype: Any
    key: str
    numel: int


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, root: str, path: str):
        super().__init__(io.BytesIO(data))
        self._zf, self._root, self._path = zf, root, path
        self._cache: dict[str, np.ndarray] = {}

    # -- globals: a fixed table, never an import
    def find_class(self, module: str, name: str):
        qual = f"{module}.{name}"
        if qual == "torch._utils._rebuild_tensor_v2":
            return self._rebuild_tensor
        if qual == "torch._utils._rebuild_parameter":
            return lambda data, requires_grad, backward_hooks, *rest: data
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if qual == "collections.OrderedDict":
            return collections.OrderedDict
        if qual in ("builtins.dict", "__builtin__.dict"):
            return dict
        if qual in ("builtins.list", "__builtin__.list"):
            return list
        if qual in ("builtins.set", "__builtin__.set"):
            return set
        if qual in ("builtins.int", "__builtin__.int", "__builtin__.long"):
            return int
        if qual in ("builtins.float", "__builtin__.float"):
            return float
        if qual == "collections.defaultdict":
            return _SafeDefaultDict
        return _opaque_class(qual)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent id {pid!r}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or STORAGE_DTYPES.get(stype.name) is None:
            raise CheckpointError(f"{self._path}: unsupported storage type {stype!r}")
        return _Storage(STORAGE_DTYPES[stype.name], str(key), int(numel))

    def _storage_array(self, st: _Storage) -> np.ndarray:
        if st.key not in self._cache:
            member = f"{self._root}/data/{st.key}"
            try:
                raw = self._zf.read(member)
            except KeyError:
                raise CheckpointError(f"{self._path}: storage {member} is missing (truncated file?)") from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise CheckpointError(f"{self._path}: storage {member} cannot be read: {e}") from None
            itemsize = np.dtype(st.dtype).itemsize
            if len(raw) != st.numel * itemsize:
                raise CheckpointError(
                    f"{self._path}: storage {member} has {len(raw)} bytes, expected {st.numel}×{itemsize}")
            self._cache[st.key] = np.frombuffer(raw, dtype=np.dtype(st.dtype).newbyteorder("<"))
        return self._cache[st.key]

    def _rebuild_tensor(self, storage, offset, size, stride, *_):
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self._path}: tensor without a storage")
        flat = self._storage_array(storage)
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if any(s < 0 for s in size + stride) or offset < 0:
            raise CheckpointError(f"{self._path}: negative size or stride in storage {storage.key}")
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else offset
        if extent > flat.size:
            raise CheckpointError(
                f"{self._path}: tensor of size {size} runs past the end of storage {storage.key}")
        item = flat.itemsize
        arr = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * item for s in stride])
        return TensorRef(np.array(arr, dtype=arr.dtype.newbyteorder("=")), storage.key, int(offset))


@dataclass
class TensorRef:
    """A tensor read from the file, with the storage it came from (to detect aliased entries)."""

    array: np.ndarray
    storage_key: str
    offset: int


def read_checkpoint(path: str | Path) -> dict:
    """Unpickle a `torch.save` zip. Tensors come back as `TensorRef`; unknown objects as `Opaque`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (truncated, corrupted, or saved with the legacy "
            "pre-1.6 format)") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected one <root>/data.pkl in the zip, found {pkls}")
        root = pkls[0].split("/")[0]
        byteorder = f"{root}/byteorder"
        if byteorder in zf.namelist() and zf.read(byteorder).strip() != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        try:
            data = zf.read(pkls[0])
            obj = _Unpickler(data, zf, root, str(path)).load()
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
                AttributeError, IndexError, KeyError) as e:
            raise CheckpointError(f"{path}: corrupted checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: the checkpoint holds a {type(obj).__name__}, expected a dict")
    return obj


def omegaconf_value(node: Any, key: str):
    """Read `cfg.key` from an OmegaConf DictConfig stand-in (its `_content` maps keys to nodes)."""
    if not isinstance(node, Opaque) or not isinstance(node.state, dict):
        return None
    content = node.state.get("__dict__", node.state).get("_content")
    if not isinstance(content, dict) or key not in content:
        return None
    value = content[key]
    if isinstance(value, Opaque) and isinstance(value.state, dict):
        return value.state.get("__dict__", value.state).get("_val")
    return value
