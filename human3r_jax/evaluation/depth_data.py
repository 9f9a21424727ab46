"""Ground-truth depth of the video-depth benchmarks, read from the layouts the official preparation
scripts (MonST3R, TTT3R) write:

    bonn    ROOT/rgbd_bonn_<seq>/depth_<N>/*.png     16-bit PNG, metres × 5000 (N = 110 for `bonn`)
    kitti   ROOT/depth_selection/val_selection_cropped/groundtruth_depth_gathered/<drive>/*.png
                                                     16-bit PNG, metres × 256
    sintel  ROOT/training/depth/<seq>/*.dpt          float32 depth after a 12-byte header

A pixel without ground truth (0 in the PNGs) becomes −1, which the metrics' valid mask (GT > 0)
excludes, as the official readers do. Frames are taken in sorted file-name order and grouped by
sequence folder. Every malformed file is a DepthDataError naming it; a .dpt file is checked
against its header before anything is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from human3r_jax.errors import Human3rError

BONN_SEQUENCES = ("balloon2", "crowd2", "crowd3", "person_tracking2", "synchronous")
# The 14 sequences of the Sintel camera-pose subset (643 frames); the depth task uses all 23 of
# training/depth when the predictions cover more than those 643 frames.
SINTEL_POSE_SEQUENCES = (
    "alley_2",
    "ambush_4",
    "ambush_5",
    "ambush_6",
    "cave_2",
    "cave_4",
    "market_2",
    "market_5",
    "market_6",
    "shaman_3",
    "sleeping_1",
    "sleeping_2",
    "temple_2",
    "temple_3",
)
SINTEL_TAG = np.float32(202021.25)
MAX_DPT_PIXELS = 100_000_000  # the official reader's bound on width × height


class DepthDataError(Human3rError):
    """A missing or malformed ground-truth file or folder; the message names it."""


def read_png_depth(path: str | Path, units_per_metre: float) -> np.ndarray:
    """[H, W] float64 metres of a 16-bit depth PNG (Bonn: 5000, KITTI: 256 units per metre); −1 where 0."""
    try:
        with PIL.Image.open(path) as im:
            raw = np.asarray(im, dtype=np.int64)
    except FileNotFoundError:
        raise DepthDataError(f"{path}: no such file") from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DepthDataError(f"{path}: cannot read the depth PNG ({e})") from None
    if raw.ndim != 2 or raw.max(initial=0) <= 255:  # an 8-bit image would be a wrongly converted depth map
        raise DepthDataError(
            f"{path}: not a 16-bit single-channel depth map (shape {raw.shape}, max {raw.max(initial=0)})"
        )
    depth = raw.astype(np.float64) / units_per_metre
    depth[raw == 0] = -1.0
    return depth


def read_sintel_dpt(path: str | Path) -> np.ndarray:
    """[H, W] float32 depth of an MPI-Sintel .dpt file (tag 202021.25, int32 width and height, then
    the values row by row, little-endian)."""
    path = Path(path)
    try:
        data = path.read_bytes() if path.stat().st_size <= 12 + 4 * MAX_DPT_PIXELS else None
    except OSError as e:
        raise DepthDataError(f"{path}: cannot read ({e.strerror or e})") from None
    if data is None or len(data) < 12:
        raise DepthDataError(f"{path}: not a Sintel .dpt file (size {path.stat().st_size} bytes)")
    tag = np.frombuffer(data, "<f4", 1)[0]
    width, height = (int(v) for v in np.frombuffer(data, "<i4", 2, offset=4))
    if tag != SINTEL_TAG:
        raise DepthDataError(f"{path}: not a Sintel .dpt file (tag {tag}, expected {SINTEL_TAG})")
    if not (width > 0 and height > 0 and 1 < width * height < MAX_DPT_PIXELS):
        raise DepthDataError(f"{path}: bad size {width}x{height} in the header")
    if len(data) != 12 + 4 * width * height:
        raise DepthDataError(f"{path}: {len(data) - 12} bytes of depth, the header says {width}x{height} floats")
    return np.frombuffer(data, "<f4", offset=12).reshape(height, width).astype(np.float32)


def _sorted_files(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        raise DepthDataError(f"{folder}: no such folder")
    files = sorted(folder.glob(pattern))
    if not files:
        raise DepthDataError(f"{folder}: no {pattern} files")
    return files


def bonn_sequences(root: str | Path, frames: int = 110) -> dict[str, list[Path]]:
    """{sequence: its GT depth files} of `bonn` (frames=110) or `bonn_N` (frames=N)."""
    return {seq: _sorted_files(Path(root) / f"rgbd_bonn_{seq}" / f"depth_{frames}", "*.png") for seq in BONN_SEQUENCES}


def kitti_sequences(root: str | Path) -> dict[str, list[Path]]:
    """{drive: its GT depth files} of every drive under the gathered validation ground truth."""
    base = Path(root) / "depth_selection" / "val_selection_cropped" / "groundtruth_depth_gathered"
    if not base.is_dir():
        raise DepthDataError(f"{base}: no such folder (the KITTI layout of MonST3R's prepare_kitti.py)")
    drives = sorted(p for p in base.iterdir() if p.is_dir())
    if not drives:
        raise DepthDataError(f"{base}: no drive folders")
    return {d.name: _sorted_files(d, "*.png") for d in drives}


def sintel_sequences(root: str | Path, full: bool = True) -> dict[str, list[Path]]:
    """{sequence: its GT .dpt files}: all of training/depth (full), or the 14 pose-subset sequences."""
    base = Path(root) / "training" / "depth"
    if not base.is_dir():
        raise DepthDataError(f"{base}: no such folder (MPI-Sintel's training/depth)")
    names = sorted(p.name for p in base.iterdir() if p.is_dir()) if full else SINTEL_POSE_SEQUENCES
    return {name: _sorted_files(base / name, "*.dpt") for name in names}
