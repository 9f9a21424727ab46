"""A reconstruction folder read back for export, finished or interrupted, without the model.

The frames are read from `frames/NNNNNN.npz` (schema `export.FRAME_KEYS`) one at a time, so memory does
not grow with the video; an interrupted run's folder gives the frames it wrote (from 000000 up to the
first one missing) and `complete` False.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from human3r_jax import outputs
from human3r_jax.errors import Human3rError
from human3r_jax.export import PERSON_FIELDS
from human3r_jax.npz import read_npy, read_npz

# What every frame file holds (the people's fields are there for Human3R models).
SCENE_KEYS = ("c2w", "intrinsics", "depth", "conf", "pts3d_world", "image")
NAME_KEYS = ("frame_index", "frame_name", "time")  # frame files of version 0.1 have none: see `_names`


class ExportError(Human3rError):
    """A folder, frame file or option an export cannot use; the message names it."""


@dataclasses.dataclass
class Reconstruction:
    """path: the folder; meta: its meta.json; n_frames: frames on disk; complete: the run finished;
    hw: model resolution (H, W); input_size: (W, H) of the input frames (None: not recorded);
    size: the resolution rule (512 or 224); fps: the video's frame rate (None: images); humans:
    the model gave people (Human3R)."""

    path: Path
    meta: dict
    n_frames: int
    complete: bool
    hw: tuple[int, int]
    input_size: tuple[int, int] | None
    size: int
    fps: float | None
    humans: bool

    def frame_path(self, i: int) -> Path:
        return self.path / "frames" / f"{i:06d}.npz"

    def frame(self, i: int) -> dict[str, np.ndarray]:
        """Frame i's file, checked against the schema (a bad file is an ExportError naming it), with
        frame_index, frame_name and time filled in for old files that lack them."""
        if not 0 <= i < self.n_frames:
            raise ExportError(f"{self.path}: frame {i} out of range (0..{self.n_frames - 1})")
        path = self.frame_path(i)
        f = read_npz(
            path, ExportError, SCENE_KEYS, optional=(*NAME_KEYS, *_PERSON_KEYS, "smpl_verts_world", "smpl_joints_world")
        )
        h, w = self.hw
        for key, shape in (
            ("c2w", (4, 4)),
            ("intrinsics", (3, 3)),
            ("depth", (h, w)),
            ("conf", (h, w)),
            ("pts3d_world", (h, w, 3)),
            ("image", (h, w, 3)),
        ):
            _check(path, key, f[key], shape)
        if "smpl_id" in f:
            n = len(_check(path, "smpl_id", f["smpl_id"], (None,)))
            for key, shape in _PERSON_SHAPES.items():
                if key in f:
                    _check(path, key, f[key], (n, *shape))
            if "smpl_verts_world" in f:
                _check(path, "smpl_verts_world", f["smpl_verts_world"], (n, None, 3))
            if "smpl_joints_world" in f:
                _check(path, "smpl_joints_world", f["smpl_joints_world"], (n, 127, 3))
        if "frame_index" not in f:
            f.update(self._names(i))
        return f

    def frames(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_frames):
            yield self.frame(i)

    def _names(self, i: int) -> dict:
        fps = self.fps or 0.0
        return {
            "frame_index": np.int64(i),
            "frame_name": np.str_(f"frame_{i:06d}"),
            "time": np.float64(i / fps if fps > 0 else i),
        }

    def smplx_faces(self) -> np.ndarray | None:
        """[20908, 3] faces written with --smplx, else None."""
        path = self.path / "smplx_faces.npy"
        if not path.is_file():
            return None
        faces = read_npy(path, ExportError)
        if faces.dtype.kind not in "iu" or faces.ndim != 2 or faces.shape[1] != 3:
            raise ExportError(f"{path}: {faces.dtype} {list(faces.shape)}; expected integer faces of shape [*, 3]")
        return faces

    def points(self, conf_threshold: float = 1.5, per_frame: int = 5000, max_points: int = 1_000_000) -> dict:
        """The fused confident point cloud, as scene.glb takes it: each frame's points with conf >
        conf_threshold, at most `per_frame` of them evenly spaced in pixel order, the whole cloud thinned by
        half whenever it passes `max_points`. → xyz [P, 3] float32 (world), rgb [P, 3] uint8, frame [P]
        (the frame each point comes from) and pixel [P, 2] (its column x and row y at the model resolution)."""
        xyz, rgb, frame, pixel = [np.zeros((0, 3), np.float32)], [np.zeros((0, 3), np.uint8)], [], []
        kept = 0
        for i in range(self.n_frames):
            f = self.frame(i)
            rows, cols = np.nonzero(f["conf"] > conf_threshold)
            if len(rows) > per_frame:
                sel = np.linspace(0, len(rows) - 1, per_frame).astype(int)
                rows, cols = rows[sel], cols[sel]
            xyz.append(f["pts3d_world"][rows, cols].astype(np.float32))
            rgb.append(f["image"][rows, cols])
            frame.append(np.full(len(rows), i, np.int64))
            pixel.append(np.stack([cols, rows], 1))
            kept += len(rows)
            if kept > max_points:  # bounded: thin the whole cloud by half
                out = _concat(xyz, rgb, frame, pixel)
                xyz, rgb, frame, pixel = ([a[::2]] for a in out)
                kept = len(xyz[0])
        xyz, rgb, frame, pixel = _concat(xyz, rgb, frame, pixel)
        return {"xyz": xyz, "rgb": rgb, "frame": frame, "pixel": pixel}

    def note(self) -> str | None:
        """What to tell the user about an interrupted run's folder (None when complete)."""
        if self.complete:
            return None
        state = self.meta.get("state", "stopped")
        return f"{self.path}: the reconstruction is partial ({state}): exporting the {self.n_frames} frames it has"


# The per-person fields a frame file may hold, with one person's shape.
_PERSON_SHAPES = {k: f.shape for k, f in PERSON_FIELDS.items()}
_PERSON_KEYS = tuple(_PERSON_SHAPES)


def _concat(xyz, rgb, frame, pixel):
    return (
        np.concatenate(xyz),
        np.concatenate(rgb),
        np.concatenate(frame) if frame else np.zeros(0, np.int64),
        np.concatenate(pixel) if pixel else np.zeros((0, 2), np.int64),
    )


def _check(path: Path, key: str, a: np.ndarray, shape: tuple) -> np.ndarray:
    """`a`, which must be a numeric array of `shape` (None: any length)."""
    if a.dtype.kind not in "iuf" or a.ndim != len(shape) or any(s not in (None, n) for s, n in zip(shape, a.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ExportError(f"{path}: entry {key!r} is {a.dtype} {list(a.shape)}; expected numbers of shape {want}")
    return a


def load(folder: str | Path) -> Reconstruction:
    """Open a `human3r-jax reconstruct` output folder (finished or interrupted) for export."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder (give a `human3r-jax reconstruct` output folder)")
    if not outputs.is_marked(folder, "reconstruction"):
        raise ExportError(
            f"{folder}: not a reconstruction of human3r-jax (no {outputs.MARKER} marker or meta.json); "
            "give a `human3r-jax reconstruct` output folder"
        )
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{folder / 'meta.json'}: cannot read it ({e})") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{folder / 'meta.json'}: not a JSON object")
    n = 0
    while (folder / "frames" / f"{n:06d}.npz").is_file():
        n += 1
    if n == 0:
        raise ExportError(f"{folder}: the reconstruction has no frames (frames/000000.npz is missing)")
    first = read_npz(folder / "frames" / "000000.npz", ExportError, ("image",), optional=("smpl_id",))
    image = _check(folder / "frames" / "000000.npz", "image", first["image"], (None, None, 3))
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    size = settings.get("size", 512)
    input_size = meta.get("input_size")
    if not (isinstance(input_size, list) and len(input_size) == 2 and all(isinstance(v, int) for v in input_size)):
        input_size = None
    fps = meta.get("input_fps")
    return Reconstruction(
        path=folder,
        meta=meta,
        n_frames=n,
        complete=meta.get("complete") is True,
        hw=tuple(image.shape[:2]),
        input_size=tuple(input_size) if input_size else None,
        size=size if size in (512, 224) else 512,
        fps=float(fps) if isinstance(fps, int | float) and fps > 0 else None,
        humans="smpl_id" in first,
    )
