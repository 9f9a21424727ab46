"""Read a PyTorch `.pth` checkpoint without PyTorch, without running code from the file, and without
letting the file decide how much memory is taken.

A `torch.save` file is a zip holding `<root>/data.pkl` (the pickled object) and one raw
little-endian file per storage, `<root>/data/<key>`. The pickle is read by an unpickler whose
`find_class` never imports anything: the few globals it understands (tensor rebuilding, storage
types, plain containers) are mapped to local functions, and every other global becomes an inert
placeholder that only records its arguments. So OmegaConf configs, numpy scalars or anything else a
training script pickled beside the weights load as data, and nothing from the file is executed.

Sizes the file declares are checked before anything is allocated for them: the pickle's size, its
opcode count, memo indices and nesting are bounded before it is unpickled; the constructors it may
call are charged for the elements they copy; tensors come back lazy (`TensorRef`), their views
checked against their storage's declared size, which is checked against the zip member's size; and
storage bytes are read only when a tensor is read, once, within an optional `ReadBudget`.
"""

from __future__ import annotations

import collections
import collections.abc
import functools
import io
import lzma
import math
import pickle
import pickletools
import reprlib
import struct
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from human3r_jax.errors import Human3rError

try:  # bfloat16 storages
    from ml_dtypes import bfloat16 as _bf16
except ImportError:  # pragma: no cover - ml_dtypes ships with jax
    _bf16 = None


class CheckpointError(Human3rError):
    """A checkpoint file that cannot be read or does not hold what is expected."""


STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": _bf16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

# Bounds on what a file may make the reader allocate before any of it is checked against a model.
MAX_PICKLE_BYTES = 64 << 20  # data.pkl; real ones are < 1 MB (170 kB for 669 tensors)
# Each opcode creates at most one object, small (≤ ~220 bytes: an empty set) but for strings, bytes and ints
# read from the pickle (at most its size in all): this bounds the unpickled objects to ~250 MB + the pickle's
# size. Real pickles take ~50 opcodes per tensor (29k for the 594-entry fixture): room for 20k tensors.
MAX_PICKLE_OPS = 1_000_000
MAX_NESTING = 1000  # hashing a deeper tuple (as a dict key, in a set) recurses in C unchecked: a crash
# Elements the pickle's constructor calls may copy in total (real pickles: a few). A copied element costs at most
# ~100 bytes (a set or dict entry; a new one-character str in `list(text)`): ~25 MB.
MAX_COPIED = 250_000
MAX_DIMS = 32
READ_CHUNK = 4 << 20  # storages are decompressed into their array in chunks of this many bytes

# What a malformed file can raise from zipfile, zlib/lzma, the unpickler or the constructors it calls.
_CORRUPT = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    LookupError,
    ArithmeticError,
    RuntimeError,
    MemoryError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)

_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 10
_REPR.maxstring = _REPR.maxother = 80


def brief(obj: Any) -> str:
    """A short one-line repr of data from a file, bounded in size and depth."""
    try:
        return _REPR.repr(obj)
    except Exception:  # e.g. an int with more digits than Python prints: data from a file, any error is possible
        return f"<{type(obj).__name__}>"


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


class _CopyBudget:
    """The elements the pickle's constructor calls may copy: `list(x)` REDUCEd again and again on one memoised
    big `x` would otherwise allocate without bound from a small pickle."""

    def __init__(self, path: str):
        self.path, self.left = path, MAX_COPIED

    def charge(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise CheckpointError(f"{self.path}: the pickle copies more than {MAX_COPIED:,} elements (a copy bomb)")


class Opaque:
    """Stand-in for a pickled object of a class we do not import (OmegaConf nodes, …): it keeps the
    constructor arguments, the BUILD state and any items, and does nothing else."""

    qualname = "?"
    copies: _CopyBudget | None = None  # set on the classes an unpickler makes: they copy their arguments

    def __new__(cls, *args, **kwargs):
        if cls.copies is not None:
            cls.copies.charge(len(args) + len(kwargs))
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


class _SafeDefaultDict(collections.defaultdict):
    """defaultdict whose factory may only be a plain container type."""

    def __init__(self, factory=None, *args):
        factory = getattr(factory, "__wrapped__", None)  # find_class hands out charged wrappers of the types
        super().__init__(factory if factory in (dict, list, set, int, float) else None, *args)


_CONTAINERS = {
    "collections.OrderedDict": collections.OrderedDict,
    "collections.defaultdict": _SafeDefaultDict,
    "builtins.dict": dict,
    "__builtin__.dict": dict,
    "builtins.list": list,
    "__builtin__.list": list,
    "builtins.set": set,
    "__builtin__.set": set,
    "builtins.int": int,
    "__builtin__.int": int,
    "__builtin__.long": int,
    "builtins.float": float,
    "__builtin__.float": float,
}


# Tuples, so that a pickle BUILD cannot rewrite them after they were checked.
class _StorageType(NamedTuple):
    name: str


class _Storage(NamedTuple):
    dtype: Any
    key: str
    numel: int


class ReadBudget:
    """Bytes that reading storages may allocate; a storage is charged once, when it is first read."""

    def __init__(self, limit: int):
        self.limit, self.used = int(limit), 0

    def charge(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.limit:
            raise CheckpointError(
                f"{what} holds {nbytes:,} bytes: more than the model needs (read budget "
                f"{self.limit:,} bytes, {self.used:,} read)"
            )
        self.used += nbytes

    def check(self, tensors: Iterable[TensorRef]) -> None:
        """Refuse, before reading any of them, tensors whose storages (each counted once) exceed what is left."""
        storages = {(t.reader, t.storage.key): t for t in tensors}
        total = sum(t.storage_nbytes for t in storages.values())
        if storages and self.used + total > self.limit:
            big = max(storages.values(), key=lambda t: t.storage_nbytes)
            raise CheckpointError(
                f"{big.reader.path}: storage {big.reader.member(big.storage.key)!r} holds {big.storage_nbytes:,} "
                f"bytes; the storages to read hold {total:,}: more than the model needs (read budget "
                f"{self.limit:,} bytes, {self.used:,} read)"
            )


class StorageReader:
    """The storages of one checkpoint file. The pickle's declarations are checked against the zip directory
    (no read); bytes are read when a tensor is read, once (cached), from the zip opened on first use and
    closed with the reader (when its last TensorRef goes)."""

    def __init__(self, path: str, root: str, sizes: dict[str, int]):
        self.path, self.root, self._sizes = path, root, sizes
        self._declared: dict[str, _Storage] = {}
        self._cache: dict[str, np.ndarray] = {}
        self._zf: zipfile.ZipFile | None = None

    def member(self, key: str) -> str:
        return f"{self.root}/data/{key}"

    def declare(self, dtype: Any, key: str, numel: int) -> _Storage:
        member, itemsize = self.member(key), np.dtype(dtype).itemsize
        if member not in self._sizes:
            raise CheckpointError(f"{self.path}: storage {member!r} is missing (truncated file?)")
        if self._sizes[member] != numel * itemsize:
            raise CheckpointError(
                f"{self.path}: storage {member!r} has {self._sizes[member]:,} bytes, but the "
                f"pickle declares {numel:,} × {itemsize}"
            )
        storage = self._declared.setdefault(key, _Storage(dtype, key, numel))
        if storage.dtype is not dtype or storage.numel != numel:
            raise CheckpointError(f"{self.path}: storage {member!r} is declared twice, with different types")
        return storage

    def array(self, storage: _Storage, budget: ReadBudget | None = None) -> np.ndarray:
        """The whole storage, a read-only 1-D array (read on first use; charged to `budget` then)."""
        if storage.key not in self._cache:
            member = self.member(storage.key)
            nbytes = storage.numel * np.dtype(storage.dtype).itemsize
            if budget is not None:
                budget.charge(nbytes, f"{self.path}: storage {member!r}")
            try:
                raw = self._read(member, nbytes)
            except CheckpointError:
                raise
            except _CORRUPT as e:
                raise CheckpointError(f"{self.path}: storage {member!r} cannot be read ({_reason(e)})") from None
            self._cache[storage.key] = raw.view(np.dtype(storage.dtype).newbyteorder("<"))
        return self._cache[storage.key]

    def _read(self, member: str, nbytes: int) -> np.ndarray:
        if self._zf is None:
            self._zf = zipfile.ZipFile(self.path)
        if self._zf.getinfo(member).file_size != nbytes:  # the file changed since it was unpickled
            raise CheckpointError(f"{self.path}: storage {member!r} no longer has {nbytes:,} bytes")
        raw, done = np.empty(nbytes, np.uint8), 0
        with self._zf.open(member) as f:  # chunked: no second copy of the storage as one bytes object
            while done < nbytes:
                chunk = f.read(min(READ_CHUNK, nbytes - done))
                if not chunk:
                    break
                raw[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
            if done != nbytes or f.read(1):  # the last read checked the CRC
                raise CheckpointError(
                    f"{self.path}: storage {member!r} does not hold the {nbytes:,} bytes its directory entry declares"
                )
        raw.flags.writeable = False
        return raw


def _view(storage: _Storage, offset: Any, size: Any, stride: Any, path: str) -> tuple[int, tuple, tuple]:
    """The checked (offset, shape, strides) of a tensor in `storage`: within it, and with no more elements than
    it holds (a stride-0 view of a small storage as a huge tensor is a memory bomb once copied)."""
    where = f"{path}: tensor in storage {storage.key!r}"
    if not (
        isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and len(size) == len(stride) <= MAX_DIMS
    ):
        raise CheckpointError(f"{where}: size and stride must be sequences of one length ≤ {MAX_DIMS}")
    values = (offset, *size, *stride)
    if not all(type(v) is int and 0 <= v < 2**63 for v in values):
        raise CheckpointError(f"{where}: offset, sizes and strides must be integers in [0, 2**63), got {brief(values)}")
    shape, stride = tuple(size), tuple(stride)
    numel = math.prod(shape)
    end = offset + sum((n - 1) * s for n, s in zip(shape, stride)) + 1 if numel else offset
    if numel > storage.numel or end > storage.numel:
        raise CheckpointError(
            f"{where}: shape {shape} with strides {stride} at offset {offset} does not fit in "
            f"its {storage.numel:,} elements"
        )
    return offset, shape, stride


class TensorRef:
    """A tensor of a checkpoint, not read yet: its storage and a checked view of it (offset, shape and strides
    in elements). `read()` reads the storage (once) and returns a read-only view; `.array` reads it unbudgeted."""

    __slots__ = ("offset", "reader", "shape", "storage", "stride")

    def __init__(self, reader: StorageReader, storage: _Storage, offset: Any, size: Any, stride: Any):
        self.reader, self.storage = reader, storage
        self.offset, self.shape, self.stride = _view(storage, offset, size, stride, reader.path)

    def __setstate__(self, state):  # a pickle BUILD on a tensor would bypass the checks of __init__
        raise TypeError("a tensor takes no pickled state")

    @property
    def storage_nbytes(self) -> int:
        """Bytes of the whole storage: what reading this tensor allocates (unless another read it before)."""
        return self.storage.numel * np.dtype(self.storage.dtype).itemsize

    @property
    def view_key(self) -> tuple:
        """Equal for tensors that are the same view of the same storage: identical without reading."""
        return self.reader, self.storage.key, self.offset, self.shape, self.stride

    def read(self, budget: ReadBudget | None = None) -> np.ndarray:
        flat = self.reader.array(self.storage, budget)
        return np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.shape, [s * flat.itemsize for s in self.stride], writeable=False
        )

    @property
    def array(self) -> np.ndarray:
        return self.read()

    def __repr__(self):
        return f"TensorRef({self.reader.member(self.storage.key)!r}, shape={self.shape})"


_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_INTO = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}  # add what is above to the object below
# Stack effect of each opcode: (objects taken below the last MARK, whether it takes the MARK too, objects pushed).
_EFFECTS = {
    op: (op.stack_before.index(pickletools.markobject), True, len(op.stack_after))
    if pickletools.markobject in op.stack_before
    else (len(op.stack_before), False, len(op.stack_after))
    for op in pickletools.opcodes
}


def _check_pickle(data: bytes) -> None:
    """Refuse, before unpickling, what the C unpickler would turn into a memory or stack bomb: more than
    MAX_PICKLE_OPS opcodes, a memo index beyond the opcodes read (the unpickler sizes its memo table to twice the
    index) and objects nested deeper than MAX_NESTING. A simulated stack holds each object's nesting depth (an
    upper bound for tuples and frozensets, the only containers hashing recurses into). Malformed data raises
    ValueError, as `pickletools.genops` does. (Written to allocate little per opcode: it runs on every file.)"""
    depths: list[int] = []
    marks: list[int] = []
    memo: list[int | None] = []  # depth of each memo entry (None: unset)
    filled = 0  # set entries: MEMOIZE's index, as in the C unpickler
    for n, (op, arg, _) in enumerate(pickletools.genops(data)):
        if n == MAX_PICKLE_OPS:
            raise ValueError(f"the pickle has more than {MAX_PICKLE_OPS:,} opcodes")
        if op.name == "MARK":
            marks.append(len(depths))
            continue
        if op.name in _MEMO_PUT:  # memoises the top of the stack, which stays
            index = filled if arg is None else arg
            if not depths or not 0 <= index <= n:
                raise ValueError(f"{op.name} {index} out of place")
            while len(memo) <= index:
                memo.append(None)
            filled += memo[index] is None
            memo[index] = depths[-1]
            continue
        below, takes_mark, pushes = _EFFECTS[op]
        inner = 0  # the deepest object taken (the container excepted, for _INTO)
        if takes_mark:
            if not marks:
                raise ValueError(f"{op.name} without a MARK")
            at = marks.pop()
            while len(depths) > at:
                inner = max(inner, depths.pop())
        if len(depths) < below:
            raise ValueError(f"{op.name} on a stack of {len(depths)}")
        keep = op.name in _INTO  # the container stays
        while below > keep:  # loops that allocate nothing: tracemalloc (in tests) makes allocations slow
            inner = max(inner, depths.pop())
            below -= 1
        if keep:
            depths[-1] = depth = max(depths[-1], inner + 1)
        elif op.name in _MEMO_GET:
            if not 0 <= arg < len(memo) or memo[arg] is None:
                raise ValueError(f"{op.name} {arg} of an unset memo entry")
            depths.append(depth := memo[arg])
        else:
            depth = inner if op.name == "DUP" else inner + 1
            if pushes:
                depths.append(depth)
            if pushes == 2:  # DUP
                depths.append(depth)
        if depth > MAX_NESTING:
            raise ValueError(f"the pickle nests objects more than {MAX_NESTING} deep")


def _charged(fn, copies: _CopyBudget, copies_contents: bool = False):
    """`fn`, charged for its arguments (its `*args` copies them) and, for a container type, their elements."""

    def call(*args, **kwargs):
        n = len(args) + len(kwargs)
        if copies_contents:
            n += sum(len(a) for a in args if isinstance(a, collections.abc.Sized))
        copies.charge(n)
        return fn(*args, **kwargs)

    call.__wrapped__ = fn
    return call


def _rebuild_tensor(storages: StorageReader, storage, offset, size, stride, *_) -> TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"{storages.path}: tensor without a storage")
    return TensorRef(storages, storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    # What find_class hands out references the StorageReader and the copy budget, never the unpickler: the
    # unpickler and its memo are freed with the load, and the reader's cache with the last TensorRef.
    def __init__(self, data: bytes, storages: StorageReader):
        super().__init__(io.BytesIO(data))
        self._storages, self._path = storages, storages.path
        self._copies = _CopyBudget(self._path)
        self._opaque: dict[str, type] = {}

    # -- globals: a fixed table, never an import
    def find_class(self, module: str, name: str):
        qual = f"{module}.{name}"
        if qual == "torch._utils._rebuild_tensor_v2":
            return _charged(functools.partial(_rebuild_tensor, self._storages), self._copies)
        if qual == "torch._utils._rebuild_parameter":
            return _charged(lambda data, requires_grad, backward_hooks, *rest: data, self._copies)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if qual in _CONTAINERS:
            return _charged(_CONTAINERS[qual], self._copies, copies_contents=True)
        if qual not in self._opaque:  # a class (NEWOBJ needs one), charged for the arguments it keeps
            self._opaque[qual] = type("Opaque", (Opaque,), {"qualname": qual, "copies": self._copies})
        return self._opaque[qual]

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent id {brief(pid)}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or STORAGE_DTYPES.get(stype.name) is None:
            raise CheckpointError(f"{self._path}: unsupported storage type {brief(stype)}")
        if type(key) is not str or type(numel) is not int or numel < 0:
            raise CheckpointError(f"{self._path}: storage with a bad key or size {brief((key, numel))}")
        return self._storages.declare(STORAGE_DTYPES[stype.name], key, numel)


def read_checkpoint(path: str | Path) -> dict:
    """Unpickle a `torch.save` zip. Tensors come back as lazy `TensorRef`s; unknown objects as `Opaque`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except _CORRUPT:
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (truncated, corrupted, or saved with the legacy pre-1.6 format)"
        ) from None
    with zf:
        sizes = {info.filename: info.file_size for info in zf.infolist()}
        pkls = [n for n in sizes if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected one <root>/data.pkl in the zip, found {brief(pkls)}")
        root = pkls[0].split("/")[0]
        if sizes[pkls[0]] > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{path}: {pkls[0]!r} has {sizes[pkls[0]]:,} bytes, more than the "
                f"{MAX_PICKLE_BYTES:,} a checkpoint's pickle may have"
            )
        byteorder = f"{root}/byteorder"
        try:
            if byteorder in sizes and (sizes[byteorder] > 16 or zf.read(byteorder).strip() != b"little"):
                raise CheckpointError(f"{path}: only little-endian checkpoints are supported ({byteorder!r})")
            data = zf.read(pkls[0])
            _check_pickle(data)
            obj = _Unpickler(data, StorageReader(str(path), root, sizes)).load()
        except CheckpointError:
            raise
        except _CORRUPT as e:
            raise CheckpointError(f"{path}: corrupted checkpoint ({_reason(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: the checkpoint holds a {type(obj).__name__}, expected a dict")
    return obj


def _attributes(node: Any) -> dict | None:
    """The attribute dict of an Opaque's BUILD state (`{'__dict__': {...}}` or the dict itself)."""
    if not isinstance(node, Opaque) or not isinstance(node.state, dict):
        return None
    attrs = node.state.get("__dict__", node.state)
    return attrs if isinstance(attrs, dict) else None


def omegaconf_value(node: Any, key: str):
    """Read `cfg.key` from an OmegaConf DictConfig stand-in (its `_content` maps keys to nodes)."""
    content = (_attributes(node) or {}).get("_content")
    if not isinstance(content, dict) or key not in content:
        return None
    value = content[key]
    attrs = _attributes(value)
    return value if attrs is None else attrs.get("_val")
