"""The torch-free checkpoint reader against crafted and corrupted files: every file is converted or refused
with one line naming it, within a memory bound (tracemalloc, which numpy reports its buffers to), quickly.

Crafted files are written here in torch.save's format: a zip with `archive/data.pkl`, `archive/byteorder`
and one raw member per storage, tensors pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, …)` with the storage as the persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`.
Huge members are zeros deflated as they are written: a small file, and a test that never holds them.
"""

import collections
import io
import pickle
import pickletools
import random
import struct
import time
import tracemalloc
import warnings
import zipfile
from typing import NamedTuple

import numpy as np
import pytest
from conftest import shared_path

from human3r_jax import checkpoint as ckpt
from human3r_jax.converters import torch_zip
from human3r_jax.converters.convert import convert_file, read_official
from human3r_jax.converters.rules import ConversionError
from human3r_jax.converters.torch_zip import CheckpointError

torch = pytest.importorskip("torch")

MB = 1 << 20
GIB = 1 << 30


class Storage(NamedTuple):
    key: str
    numel: int
    stype: str = "FloatStorage"


class Tensor:
    """A tensor as torch.save pickles it; any view of any storage, however inconsistent."""

    def __init__(self, storage: Storage, shape, stride=None, offset=0):
        self.storage, self.shape, self.offset = storage, tuple(shape), offset
        self.stride = (
            tuple(stride)
            if stride is not None
            else tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
        )

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (
            self.storage,
            self.offset,
            self.shape,
            self.stride,
            False,
            collections.OrderedDict(),
        )


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return "storage", getattr(torch, obj.stype), obj.key, "cpu", obj.numel
        return None


def write_zip(path, members: dict):
    """Members: bytes (stored), or an int: that many zero bytes, deflated in 1 MiB chunks as they are written."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members.items():
            if isinstance(data, bytes):
                zf.writestr(name, data, compress_type=zipfile.ZIP_STORED)
                continue
            chunk = bytes(MB)
            with zf.open(name, "w", force_zip64=True) as f:
                for start in range(0, data, MB):
                    f.write(chunk[: min(MB, data - start)])
    return path


def write_pth(path, obj, storages: dict):
    """A torch.save-style file of `obj` with the given storages (bytes, or counts of zero bytes)."""
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    members = {"archive/data.pkl": buf.getvalue(), "archive/byteorder": b"little"}
    members.update({f"archive/data/{key}": data for key, data in storages.items()})
    return write_zip(path, members)


@pytest.fixture(scope="module")
def tiny():
    """(path, constructor, {key: float32 array}) of the cut3r_tiny fixture, converted once (which also builds
    the abstract model, cached: the peaks below measure the reader and the conversion, not jax)."""
    path = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    state, constructor = read_official(path)
    convert_file(path)
    return path, constructor, {k: np.array(v.array) for k, v in state.items()}


def tiny_parts(state: dict) -> tuple[dict, dict]:
    """(tensors, storages) of a state dict of float32 arrays, one storage per tensor."""
    tensors, storages = {}, {}
    for i, (k, a) in enumerate(state.items()):
        tensors[k] = Tensor(Storage(str(i), a.size), a.shape)
        storages[str(i)] = np.ascontiguousarray(a, "<f4").tobytes()
    return tensors, storages


def crafted(path, tiny, key: str, tensor: Tensor, storage: bytes | int | None = None):
    """The tiny checkpoint with entry `key` replaced by `tensor` (its storage holding `storage`, when given)."""
    _, constructor, state = tiny
    tensors, storages = tiny_parts(state)
    tensors[key] = tensor
    if storage is not None:
        storages[tensor.storage.key] = storage
    return write_pth(path, {"args": {"model": constructor}, "model": tensors}, storages)


def measured(fn, *args):
    """(result or raised exception, tracemalloc peak in bytes, seconds) of fn(*args)."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        out = fn(*args)
    except (ConversionError, CheckpointError) as e:
        out = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out, peak, time.perf_counter() - t


def refused(path) -> tuple[str, int, float]:
    """(message, peak bytes, seconds) of a conversion that must be refused with one line naming the file."""
    e, peak, seconds = measured(convert_file, path)
    assert isinstance(e, ConversionError), f"not refused: {e!r}"
    assert "\n" not in str(e) and str(e).startswith(f"{path}: "), str(e)
    return str(e), peak, seconds


@pytest.fixture
def never_read(monkeypatch):
    """Fail the test if any storage byte is read."""

    def fail(self, member, nbytes):
        raise AssertionError(f"{member} ({nbytes} bytes) was read")

    monkeypatch.setattr(torch_zip.StorageReader, "_read", fail)


def test_huge_storage_member_is_refused_before_it_is_read(tmp_path, tiny, never_read):
    # pose_token (96 values) views the first 96 of a 1 GiB storage whose declared numel matches the member
    t = Tensor(Storage("huge", GIB // 4), (1, 1, 96))
    p = crafted(tmp_path / "huge_member.pth", tiny, "pose_token", t, GIB)
    assert p.stat().st_size < tiny[0].stat().st_size + 8 * MB  # the 1 GiB member deflates to ~5 MB
    msg, peak, seconds = refused(p)
    assert "'archive/data/huge'" in msg and "1,073,741,824 bytes" in msg and "more than the model needs" in msg
    # The model needs 23 MB: the storages to read are checked against its budget (2 × 23 MB + 64 MiB) before
    # any is read, so the peak is the pickle and the plan (~1 MB), not the 1 GiB nor the model's 23 MB.
    assert peak < 16 * MB, peak
    assert seconds < 10, seconds


def test_declared_storage_size_must_match_the_member(tmp_path, tiny, never_read):
    _, _, state = tiny
    data = state["pose_token"].astype("<f4").tobytes()
    p = crafted(tmp_path / "numel.pth", tiny, "pose_token", Tensor(Storage("s", 97), (1, 1, 96)), data)
    msg, peak, _ = refused(p)
    assert "storage 'archive/data/s' has 384 bytes, but the pickle declares 97 × 4" in msg
    assert peak < 16 * MB, peak  # refused while unpickling: no storage is read
    p = crafted(tmp_path / "missing.pth", tiny, "pose_token", Tensor(Storage("absent", 96), (1, 1, 96)))
    assert "storage 'archive/data/absent' is missing" in refused(p)[0]
    # pose_token's storage (96 floats) declared again, after it, as 48 longs: the same bytes, another type
    _, constructor, state = tiny
    tensors, storages = tiny_parts(state)
    tensors["zz_extra"] = Tensor(Storage(tensors["pose_token"].storage.key, 48, "LongStorage"), (48,))
    p = write_pth(tmp_path / "twice.pth", {"args": {"model": constructor}, "model": tensors}, storages)
    assert "declared twice" in refused(p)[0]


@pytest.mark.parametrize(
    "shape,stride,offset,needle",
    [
        ((30000, 30000), (0, 0), 0, "does not fit in its 1 elements"),
        ((10**6, 10**6), (0, 0), 0, "does not fit in its 1 elements"),
        ((1, 1, 96), (0, 0, 0), 0, "does not fit in its 1 elements"),  # the parameter's shape, broadcast from 1 value
        ((96,), (-1,), 95, "integers in [0, 2**63)"),
        ((1,), (1,), 1, "does not fit"),  # offset past the end
        ((1,), (1,), -1, "integers in [0, 2**63)"),
        ((-1,), (1,), 0, "integers in [0, 2**63)"),
        ((2**63,), (1,), 0, "integers in [0, 2**63)"),
        ((1.0,), (1,), 0, "integers in [0, 2**63)"),
        ((1, 1), (1,), 0, "one length"),
        ((1,) * 33, (1,) * 33, 0, "one length ≤ 32"),
    ],
)
def test_tensor_views_outside_their_storage_are_refused(tmp_path, tiny, never_read, shape, stride, offset, needle):
    p = crafted(
        tmp_path / "view.pth", tiny, "pose_token", Tensor(Storage("one", 1), shape, stride, offset), b"\0\0\x80\x3f"
    )
    msg, peak, seconds = refused(p)
    assert needle in msg and "storage 'one'" in msg, msg
    assert peak < 16 * MB, peak  # a copy of the 30000² view would be 3.6 GB; 10⁶² a MemoryError
    assert seconds < 10, seconds


def copy_bomb(glob: bytes, n: int = 20_000, copies: int = 500) -> bytes:
    """{'bomb': [f(L), f(L), …]} where L is one memoised tuple of n ints and f the global `glob`, called with L
    (a container type) or with *L (another class: L is its arguments tuple). Each REDUCE is ≤ 6 bytes of pickle
    and copies L: 10⁷ elements, 80 MB as lists or arguments, 1 GB as sets."""
    big = b"(" + b"".join(b"J" + struct.pack("<i", i) for i in range(n)) + b"tq\x000"  # L as memo 0, popped
    call = b"c" + glob + b"\nq\x010"  # the callable as memo 1
    args = b"h\x00\x85" if glob.startswith((b"builtins", b"__builtin__")) else b"h\x00"
    return b"\x80\x02" + big + call + b"}X\x04\x00\x00\x00bomb](" + (b"h\x01" + args + b"R") * copies + b"es."


@pytest.mark.parametrize(
    "glob,bound",
    [
        # ≤ 250k elements are copied before the refusal: ~2 MB as lists or an unknown class's arguments, ~25 MB as
        # sets (2 MB per 20k-int set); L itself is ~1 MB. Without the budget the peaks would be 80, 80 and 1000 MB.
        (b"builtins\nlist", 8 * MB),
        (b"__builtin__\nset", 40 * MB),
        (b"mymodule\nMyClass", 8 * MB),
    ],
)
def test_pickle_copy_bomb_is_refused(tmp_path, glob, bound):
    p = write_zip(tmp_path / "copies.pth", {"archive/data.pkl": copy_bomb(glob)})
    msg, peak, seconds = refused(p)
    assert "copies more than 250,000 elements" in msg
    assert peak < bound, peak
    assert seconds < 10, seconds


@pytest.mark.parametrize(
    "pkl,needle,bound",
    [
        # 200 kB of TUPLE1 on one int, used as a dict key: hashing it recurses 200k deep in C (a segfault)
        (b"\x80\x02}K\x01" + b"\x85" * 200_000 + b"K\x01s.", "nests objects more than 1000 deep", 16 * MB),
        # a memo index of 2**24: the C unpickler would size its memo table to 2**25 pointers (256 MB)
        (b"\x80\x02}r\x00\x00\x00\x01.", "out of place", 4 * MB),
        # 10⁵ empty dicts kept in a list (7 MB unpickled) with the opcode limit lowered to 10⁵ (the scan of the
        # real limit's 10⁶ opcodes takes 7 s under tracemalloc): the opcode count is bounded before unpickling
        (b"\x80\x02(" + b"}" * 100_000 + b"l.", "more than 100,000 opcodes", 4 * MB),
    ],
)
def test_pickle_structure_bombs_are_refused_before_unpickling(tmp_path, monkeypatch, pkl, needle, bound):
    monkeypatch.setattr(torch_zip, "MAX_PICKLE_OPS", 100_000)
    p = write_zip(tmp_path / "structure.pth", {"archive/data.pkl": pkl})
    msg, peak, seconds = refused(p)
    assert needle in msg, msg
    assert peak < bound, peak
    assert seconds < 10, seconds


def test_oversized_pickle_is_refused_before_it_is_read(tmp_path):
    p = write_zip(tmp_path / "big_pickle.pth", {"archive/data.pkl": 65 * MB})  # 65 MiB of zeros, deflated
    msg, peak, seconds = refused(p)
    assert "'archive/data.pkl' has 68,157,440 bytes, more than the 67,108,864" in msg
    assert peak < 4 * MB, peak  # reading it would take 65 MiB
    assert seconds < 5, seconds


@pytest.mark.parametrize(
    "edit,needle",
    [
        # building the abstract model costs ~50 ms and ~130 kB per block (10⁶ blocks: hours, 130 GB)
        (lambda c: c.replace("enc_depth=2,", "enc_depth=60,"), "enc_depth=60, but the state dict holds 2 enc_blocks"),
        (lambda c: c.replace("landscape_only=False", "landscape_only=False, " + "x=1, " * 5000), "characters"),
    ],
)
def test_constructor_of_a_bigger_model_is_refused_before_building_it(tmp_path, tiny, never_read, edit, needle):
    _, constructor, state = tiny
    tensors, storages = tiny_parts(state)
    p = write_pth(tmp_path / "constructor.pth", {"args": {"model": edit(constructor)}, "model": tensors}, storages)
    msg, peak, seconds = refused(p)
    assert needle in msg, msg
    assert peak < 16 * MB, peak  # the pickle (~1 MB)
    assert seconds < 10, seconds


def test_entries_that_are_not_mapped_are_never_read(tmp_path, tiny):
    # an optimizer state with a 256 MiB storage beside the weights: the conversion never reads it
    big = Tensor(Storage("adam", 64 * MB), (64 * MB,))
    _, constructor, state = tiny
    tensors, storages = tiny_parts(state)
    storages["adam"] = 256 * MB
    p = write_pth(
        tmp_path / "with_optimizer.pth",
        {"args": {"model": constructor}, "model": tensors, "optimizer": {"state": {0: {"exp_avg": big}}}},
        storages,
    )
    out, peak, seconds = measured(convert_file, p)
    assert not isinstance(out, Exception), out
    np.testing.assert_array_equal(ckpt.flatten(out[1])["pose_token"], state["pose_token"])
    # the reader's copy of the model's storages (23 MB) and the converted float32 arrays (23 MB)
    assert peak < 64 * MB, peak
    assert seconds < 20, seconds


# ---------------------------------------------------------------- fuzz


def _stored_zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def _flip(data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None, n: int = 4) -> bytes:
    out = bytearray(data)
    hi = len(data) if hi is None else hi
    for _ in range(n):
        i = rng.randrange(lo, hi)
        out[i] ^= rng.randrange(1, 256)
    return bytes(out)


def mutant(
    raw: bytes, members: list[tuple[str, bytes]], ints: list[tuple[int, int]], rng: random.Random
) -> tuple[str, bytes]:
    """(what was done, the mutated file): zip-consistent edits of the members (their CRCs fixed, so that
    the pickle and storages are parsed) or raw edits of the file and its zip headers. `ints`: (position,
    byte count) of the pickle's integer arguments (sizes, strides, offsets, numels, memo indices)."""
    kind = rng.choice(
        [
            "pkl-flip",
            "pkl-flip",
            "pkl-int",
            "pkl-int",
            "pkl-splice",
            "pkl-cut",
            "storage-flip",
            "storage-resize",
            "member-delete",
            "member-duplicate",
            "raw-truncate",
            "header-flip",
            "header-size",
        ]
    )
    names = [n for n, _ in members]
    pkl = names.index("checkpoint/data.pkl")
    storages = [i for i, n in enumerate(names) if "/data/" in n]
    edit = list(members)
    if kind.startswith("pkl"):
        data = members[pkl][1]
        i, j = sorted(rng.randrange(len(data)) for _ in range(2))
        j = min(j, i + 64)
        if kind == "pkl-flip":
            data = _flip(data, rng, n=rng.randint(1, 8))
        elif kind == "pkl-int":  # an edge value: 0, all ones (-1 or the maximum), the largest positive, random
            at, size = rng.choice(ints)
            value = rng.choice([bytes(size), b"\xff" * size, b"\xff" * (size - 1) + b"\x7f", rng.randbytes(size)])
            data = data[:at] + value + data[at + size :]
        elif kind == "pkl-splice":  # a slice repeated elsewhere: duplicated keys, opcodes, memo entries
            k = rng.randrange(len(data))
            data = data[:k] + data[i:j] + data[k:]
        else:
            data = data[:i] + data[j:] if rng.random() < 0.5 else data[:i]
        edit[pkl] = (names[pkl], data)
    elif kind == "storage-flip":
        s = rng.choice(storages)
        edit[s] = (names[s], _flip(members[s][1], rng))
    elif kind == "storage-resize":
        s = rng.choice(storages)
        data = members[s][1]
        edit[s] = (names[s], data[: rng.randrange(len(data))] if rng.random() < 0.5 else data + bytes(4))
    elif kind == "member-delete":
        del edit[rng.randrange(len(edit))]
    elif kind == "member-duplicate":
        s = rng.choice(storages)
        edit.append((names[s], members[rng.choice(storages)][1]))
    if not kind.startswith(("raw", "header")):
        return kind, _stored_zip(edit)
    if kind == "raw-truncate":
        return kind, raw[: rng.randrange(len(raw))]
    # header edits: a local header (sizes at +18/+22) or a central directory entry (+20/+24, offset at +42)
    eocd = raw.rfind(b"PK\x05\x06")
    start = struct.unpack("<I", raw[eocd + 16 : eocd + 20])[0]
    central = [i for i in range(start, eocd) if raw[i : i + 4] == b"PK\x01\x02"]
    entry = rng.choice(central)
    local = struct.unpack("<I", raw[entry + 42 : entry + 46])[0]
    if kind == "header-flip":
        at = rng.choice([local, entry])
        return kind, _flip(raw, rng, at, at + 46, n=rng.randint(1, 3))
    at = rng.choice([local + 18, local + 22, entry + 20, entry + 24, entry + 42])
    old = struct.unpack("<I", raw[at : at + 4])[0]
    new = rng.choice([0, 0xFFFFFFFF, rng.randrange(2**32), max(0, old + rng.randint(-8, 8)), old * 2])
    return f"{kind} @{at - (local if at < entry else entry)}", raw[:at] + struct.pack("<I", new) + raw[at + 4 :]


MUTANTS = 150


@pytest.mark.slow  # ~40 s; the targeted refusal tests above run in the default suite
def test_fuzzed_checkpoints_are_converted_or_refused(tmp_path, tiny):
    """150 mutants of the tiny checkpoint (seed 0): each converts or is refused with a message whose first line
    names the file (nothing else escapes), within a tracemalloc peak of 2 × the file + 16 MB: the storages read
    (at most the file, all stored) and the converted float32 arrays (the same), plus the pickle and the plan."""
    raw = tiny[0].read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    sizes = {"BININT1": 1, "BININT2": 2, "BININT": 4, "BINPUT": 1, "LONG_BINPUT": 4, "BINGET": 1, "LONG_BINGET": 4}
    ints = [
        (pos + 1, sizes[op.name])
        for op, _, pos in pickletools.genops(dict(members)["checkpoint/data.pkl"])
        if op.name in sizes
    ]
    rng = random.Random(0)
    outcomes = collections.Counter()
    worst = 0
    t0 = time.perf_counter()
    for i in range(MUTANTS):
        kind, data = mutant(raw, members, ints, rng)
        p = tmp_path / f"m{i:03d}_{kind.split()[0]}.pth"
        p.write_bytes(data)
        try:
            out, peak, _ = measured(convert_file, p)
        except Exception as e:  # anything but ConversionError / CheckpointError is a failure
            raise AssertionError(f"mutant {i} ({kind}) raised {type(e).__name__}: {e}") from e
        if isinstance(out, Exception):
            assert str(out).splitlines()[0].startswith(f"{p}: "), f"mutant {i} ({kind}): {out}"
        outcomes["refused" if isinstance(out, Exception) else "converted"] += 1
        assert peak < 2 * len(data) + 16 * MB, f"mutant {i} ({kind}): peak {peak:,} bytes"
        worst = max(worst, peak)
        p.unlink()
    seconds = time.perf_counter() - t0
    print(f"fuzz: {dict(outcomes)}, worst peak {worst / MB:.1f} MB, {seconds:.1f} s")
    assert outcomes["converted"] >= 10 and outcomes["refused"] >= 50, outcomes  # both paths were exercised
    assert seconds < 150, seconds
