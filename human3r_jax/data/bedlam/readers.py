"""Readers of one frame's files in the preprocessed layout (`schema`; written by `bedlam_preprocess`),
each checked and turned into a `DataError` that names the file:

    rgb/<frame>.png      → PIL RGB image
    mask/<frame>.png     → PIL 'L' image, 255 = human
    depth/<frame>.npy    → float32 [H, W] metres, 0 where invalid
    cam/<frame>.npz      → intrinsics [3, 3], camera-to-world [4, 4] (float64)
    smpl/<frame>.npz     → batch key → float32 [P, *shape] (schema.SMPL_KEYS), P ≥ 0 people
    smpl/<frame>.pkl     (instead of the .npz) the official file: a pickled list of per-person dicts
                         with the same keys, read with `human3r_jax.pickles.load_pickle`, a restricted
                         unpickler that builds only numpy arrays and scalars, so a hostile file cannot
                         run code.

A path is a `pathlib.Path` or anything else with the few path operations the readers use (`LayoutPath`):
the TFDS build of the layout (`bedlam.tfds.StoredPath`) serves the same files' bytes from its records,
so both go through the same decoders.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import PIL.Image

from human3r_jax.data.bedlam.errors import DataError
from human3r_jax.data.schema import CAMERA_SPEC, SMPL_KEYS
from human3r_jax.pickles import load_pickle

MAX_DEPTH = 200.0  # metres; farther depth is invalid (sky)


class LayoutPath(Protocol):
    """What the readers need of a path in the preprocessed layout (`pathlib.Path` has it)."""

    name: str

    def __truediv__(self, part: str) -> LayoutPath: ...

    def open(self, mode: str) -> BinaryIO: ...

    def exists(self) -> bool: ...


def _read_png(path: LayoutPath) -> PIL.Image.Image:
    try:
        with path.open("rb") as fh, PIL.Image.open(fh) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read the image ({e})") from None


def read_rgb(path: LayoutPath) -> PIL.Image.Image:
    return _read_png(path).convert("RGB")


def read_mask(path: LayoutPath) -> PIL.Image.Image:
    """Mode 'L' image; the official loader keeps the first (red) channel of colour masks."""
    im = _read_png(path)
    return im if im.mode == "L" else im.convert("RGB").getchannel("R")


def read_depth(path: LayoutPath, shape: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] metres with non-finite and > MAX_DEPTH values set to 0 (invalid)."""
    try:
        with path.open("rb") as fh:
            depth = np.load(fh, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read the depth map ({e})") from None
    if depth.shape != shape or not np.issubdtype(depth.dtype, np.floating):
        raise DataError(f"{path}: depth map is {depth.dtype} {depth.shape}, expected float {shape} like its image")
    depth = depth.astype(np.float32)
    depth[~np.isfinite(depth) | (depth > MAX_DEPTH)] = 0.0
    return depth


def _load_npz(path: LayoutPath) -> dict[str, np.ndarray]:
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            return dict(z)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read the archive ({e})") from None


def read_camera(path: LayoutPath) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics [3, 3], camera-to-world [4, 4]) as float64."""
    z = _load_npz(path)
    out = []
    for key, (_, shape) in CAMERA_SPEC.items():
        if key not in z:
            raise DataError(f"{path}: missing key {key!r}")
        a = np.asarray(z[key])
        if a.shape != shape or not np.isfinite(a).all():
            raise DataError(f"{path}: {key!r} must be a finite {shape} array, got {a.dtype} {a.shape}")
        out.append(a.astype(np.float64))
    return out[0], out[1]


def load_smpl_pickle(path: Path) -> list[dict]:
    """The official smpl/<frame>.pkl: a list of per-person dicts, loaded without running code."""
    people = load_pickle(path, DataError)
    if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
        raise DataError(f"{path}: expected a list of per-person dicts, got {type(people).__name__}")
    return people


def read_smpl(smpl_dir: LayoutPath, frame: str) -> dict[str, np.ndarray]:
    """Batch key → float32 [P, *person shape] for the people of one frame (`.npz`, else `.pkl`)."""
    npz, pkl = smpl_dir / f"{frame}.npz", smpl_dir / f"{frame}.pkl"
    if npz.exists():
        path, z = npz, _load_npz(npz)
        people = None
    elif pkl.exists():
        path, people = pkl, load_smpl_pickle(pkl)
    else:
        raise DataError(f"{npz}: no such file (nor {pkl.name})")
    out = {}
    for key, (file_key, shape) in SMPL_KEYS.items():
        try:
            a = np.asarray(z[file_key] if people is None else [np.asarray(p[file_key]) for p in people])
        except KeyError:
            raise DataError(f"{path}: missing key {file_key!r}") from None
        except ValueError as e:  # people's arrays of different shapes
            raise DataError(f"{path}: {file_key!r}: {e}") from None
        n = len(a) if a.ndim else -1
        if n < 0 or a.size != n * int(np.prod(shape)) or not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: {file_key!r} is {a.dtype} {a.shape}, expected [P, {', '.join(map(str, shape))}]")
        out[key] = a.reshape(n, *shape).astype(np.float32)
    if len({len(a) for a in out.values()}) != 1:
        raise DataError(f"{path}: the per-person arrays disagree on the number of people")
    return out
