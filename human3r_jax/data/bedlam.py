"""BEDLAM training data (spec §6, §7.2): an index over the preprocessed sequences, a pure numpy sampler
of multi-view samples with the official `BEDLAM_Multi` semantics, and a deterministic, resumable
tf.data pipeline of batches.

Layout read (written by `bedlam_preprocess`; the official layout but SMPL-X labels may be `.npz`)::

    <root>/{Training,Test}/<scene>_<seq>/
        rgb/<frame>.png      RGB image (1280×720 for BEDLAM)
        depth/<frame>.npy    float32 [H, W] metres
        mask/<frame>.png     uint8 [H, W], 255 = human
        cam/<frame>.npz      intrinsics [3, 3], pose [4, 4] camera-to-world (OpenCV axes)
        smpl/<frame>.npz     per-person stacked arrays, P ≥ 0 people: smplx_root_pose [P, 3],
                             smplx_body_pose [P, 21, 3], smplx_{jaw,leye,reye}_pose [P, 3],
                             smplx_{left,right}_hand_pose [P, 15, 3], smplx_shape [P, 11],
                             smplx_transl [P, 3] (camera frame, m)
        smpl/<frame>.pkl     (alternative, the official file) a pickled list of per-person dicts with
                             the same keys; read with a restricted unpickler that builds only numpy
                             arrays and scalars, so a hostile file cannot run code.

Batch schema (B batch, V views, M = max_humans slots, H×W the batch's resolution)::

    img                 float32 [B, V, H, W, 3]   ImgNorm'd to [-1, 1] after colour jitter (channels last)
    ray_map             float32 [B, V, H, W, 6]   ray origin (3) and unit direction (3) in view 0's camera
    img_mask, ray_mask  bool    [B, V]            which inputs the model sees for each view
    depth               float32 [B, V, H, W]      metres, 0 where invalid
    valid               bool    [B, V, H, W]      depth > 0
    K                   float32 [B, V, 3, 3]      intrinsics after crop/resize
    c2w                 float32 [B, V, 4, 4]      camera-to-world
    human_mask          float32 [B, V, H, W]      0/1
    smpl_mask           bool    [B, V, M]         slot holds a person (slots sorted by increasing depth)
    smpl_root_pose      float32 [B, V, M, 3]      axis-angle; smpl_body_pose [.., 21, 3];
    smpl_jaw_pose, smpl_leye_pose, smpl_reye_pose [.., 3]; smpl_left_hand_pose, smpl_right_hand_pose
                        [.., 15, 3]; smpl_betas [.., 11]; smpl_transl [.., 3] (camera frame, m);
                        zeros in empty slots
    frame_ids           int32   [B, V]            position of each view's frame in its sequence
    seq_index           int32   [B]               index into `BedlamIndex.sequences`
    step                int64   []                the batch number

The 896-pixel padded image of the human-prior encoder, its intrinsics, and the ground-truth head cells
and detection map are not built here: the train step computes them on the accelerator from `img`, `K`
and the SMPL-X forward of the slots (as the official `SMPLModel.update_smpl_gt` does at loss time).

Determinism and resume: batch number `step` is a pure function of (seed, step). Its resolution is drawn
from the list (the official sampler's weights: the first half of the list twice as likely) by
`default_rng([seed, step, 2**32 - 1])`; sample i uses `default_rng([seed, step, i])` for everything
(start frame, stride, crops, colour jitter, input masks). The start frame is uniform over all start
frames of the split, with replacement (the official sampler draws dataset indices, which are start
frames, so longer sequences are drawn more often). `make_dataset(..., start_step=k)` therefore
yields exactly batches k, k+1, … of a fresh run, with no tf.data checkpoint.

Needs TensorFlow only for `make_dataset`/`iterate` (`pip install human3r-jax[train]`); TensorFlow is
imported lazily and never sees a GPU.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import re
import weakref
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageEnhance

from human3r_jax.data.schema import OFFICIAL_RESOLUTIONS, SMPL_KEYS, SPLITS, batch_spec
from human3r_jax.errors import Human3rError
from human3r_jax.pickles import load_pickle

log = logging.getLogger(__name__)

SUBFOLDERS = ("rgb", "depth", "mask", "cam", "smpl")
MAX_DEPTH = 200.0           # metres; farther depth is invalid (sky)
MIN_HUMAN_DEPTH = 0.01      # people must be in front of the camera
MAX_INTERVAL = 4            # largest stride between views, in preprocessed (6 fps) frames
VIEW_INPUT_P = (0.85, 0.00, 0.15)  # views > 0: image only / ray map only / both

# Official exclusions (src/dust3r/datasets/bedlam.py): scenes rendered with HDRI backgrounds, close-up
# scenes, and sequences the authors found broken.
HDRI_SCENES = ("20221010_3_1000_batch01hand", "20221017_3_1000_batch01hand",
               "20221018_3-8_250_batch01hand", "20221019_3_250_highbmihand")
INVALID_SEQUENCES = frozenset("""
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000011
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000012
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000013
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000023
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000025
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000029
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000042
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000044
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000045
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000059
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000076
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000080
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000081
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000082
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000083
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000084
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000094
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000097
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000105
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000114
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000119
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000122
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000246
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000249
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000251
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000267
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000268
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000269
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000283
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000284
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000287
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000290
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000293
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000297
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000308
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000309
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000311
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000316
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000326
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000327
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000332
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000334
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000348
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000352
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000361
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000368
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000373
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000383
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000396
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000419
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000421
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000425
20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000434
20221012_3-10_500_batch01hand_zoom_highSchoolGym_seq_000079
20221012_3-10_500_batch01hand_zoom_highSchoolGym_seq_000486
20221013_3_250_batch01hand_orbit_bigOffice_seq_000120
20221013_3_250_batch01hand_orbit_bigOffice_seq_000122
20221013_3_250_batch01hand_orbit_bigOffice_seq_000149
20221013_3_250_batch01hand_orbit_bigOffice_seq_000161
20221013_3_250_batch01hand_orbit_bigOffice_seq_000182
20221013_3_250_batch01hand_orbit_bigOffice_seq_000189
20221013_3_250_batch01hand_orbit_bigOffice_seq_000192
20221013_3_250_batch01hand_orbit_bigOffice_seq_000193
20221013_3_250_batch01hand_orbit_bigOffice_seq_000196
20221013_3_250_batch01hand_orbit_bigOffice_seq_000207
20221013_3_250_batch01hand_orbit_bigOffice_seq_000226
20221013_3_250_batch01hand_static_bigOffice_seq_000015
20221013_3_250_batch01hand_static_bigOffice_seq_000038
20221014_3_250_batch01hand_orbit_archVizUI3_time15_seq_000086
20221014_3_250_batch01hand_orbit_archVizUI3_time15_seq_000095
20221014_3_250_batch01hand_orbit_archVizUI3_time15_seq_000096
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000163
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000177
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000250
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000251
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000279
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000283
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000310
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000317
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000322
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000324
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000453
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000752
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000768
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000779
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000785
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000794
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000796
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000800
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000804
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000811
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000817
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000818
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000827
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000841
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000842
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000856
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000889
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000890
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000900
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000904
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000907
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000969
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000978
20221019_3-8_1000_highbmihand_static_suburb_d_seq_000982
20221019_3-8_250_highbmihand_orbit_stadium_seq_000003
20221019_3-8_250_highbmihand_orbit_stadium_seq_000007
20221019_3-8_250_highbmihand_orbit_stadium_seq_000013
20221019_3-8_250_highbmihand_orbit_stadium_seq_000016
20221019_3-8_250_highbmihand_orbit_stadium_seq_000027
20221019_3-8_250_highbmihand_orbit_stadium_seq_000031
20221019_3-8_250_highbmihand_orbit_stadium_seq_000036
20221019_3-8_250_highbmihand_orbit_stadium_seq_000038
20221019_3-8_250_highbmihand_orbit_stadium_seq_000046
20221019_3-8_250_highbmihand_orbit_stadium_seq_000062
20221019_3-8_250_highbmihand_orbit_stadium_seq_000067
20221019_3-8_250_highbmihand_orbit_stadium_seq_000076
20221019_3-8_250_highbmihand_orbit_stadium_seq_000085
20221019_3-8_250_highbmihand_orbit_stadium_seq_000091
20221019_3-8_250_highbmihand_orbit_stadium_seq_000106
20221024_10_100_batch01handhair_zoom_suburb_d_seq_000059
20221024_10_100_batch01handhair_zoom_suburb_d_seq_000060
20221024_10_100_batch01handhair_zoom_suburb_d_seq_000064
20221024_10_100_batch01handhair_zoom_suburb_d_seq_000069
20221024_10_100_batch01handhair_zoom_suburb_d_seq_000071
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000002
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000004
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000012
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000013
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000017
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000024
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000034
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000043
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000053
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000061
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000063
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000077
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000079
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000082
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000089
20221024_3-10_100_batch01handhair_static_highSchoolGym_seq_000095
""".split())

_RESOLUTION_STREAM = 2**32 - 1  # a third seed word no sample index reaches


class DataError(Human3rError):
    """A dataset file or folder is missing or malformed; the message names it."""


# ---------------------------------------------------------------- index


@dataclasses.dataclass(frozen=True)
class BedlamSequence:
    name: str
    path: Path
    frames: tuple[str, ...]  # sorted basenames of rgb/*.png


def is_excluded(name: str) -> bool:
    """The official exclusions: listed invalid sequences, HDRI scenes, close-up scenes."""
    return name in INVALID_SEQUENCES or name.startswith(HDRI_SCENES) or "closeup" in name


class BedlamIndex:
    """The usable sequences of one split, sorted by name.

    A sample starts at any frame with at least `min_frames - 1` frames after it; `num_starts` counts
    those frames. With `allow_repeat` (the official training set) `min_frames` = max(num_views // 3, 3)
    and a short tail repeats frames; without it (the official test set) `min_frames` = num_views.
    """

    def __init__(self, root: str | Path, split: str = "Training", num_views: int = 4, skip_invalid: bool = True,
                 allow_repeat: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"BEDLAM root {root} does not exist or is not a folder")
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if num_views < 2:
            raise ValueError(f"num_views must be at least 2, got {num_views}")
        split_dir = root / SPLITS[split]
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: split folder missing (the preprocessing writes {root}/Training "
                            f"and {root}/Test)")
        self.root, self.split, self.num_views = root, SPLITS[split], num_views
        self.min_frames = max(num_views // 3, 3) if allow_repeat else num_views
        sequences = []
        # hidden folders are the preprocessing's sequences in progress (or left by a killed run)
        for seq_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if skip_invalid and is_excluded(seq_dir.name):
                continue
            missing = [s for s in SUBFOLDERS if not (seq_dir / s).is_dir()]
            if missing:
                raise DataError(f"{seq_dir}: missing subfolder(s) {', '.join(missing)}")
            frames = tuple(sorted(f[:-4] for f in os.listdir(seq_dir / "rgb") if f.endswith(".png")))
            if len(frames) < self.min_frames:
                log.warning("skipping %s: %d frame(s), fewer than %d", seq_dir, len(frames), self.min_frames)
                continue
            sequences.append(BedlamSequence(seq_dir.name, seq_dir, frames))
        if not sequences:
            raise DataError(f"{split_dir}: no usable sequence (each needs the subfolders {', '.join(SUBFOLDERS)} "
                            f"and at least {self.min_frames} frames)")
        self.sequences = tuple(sequences)
        self._start_ends = np.cumsum([len(s.frames) - self.min_frames + 1 for s in sequences])

    @property
    def num_starts(self) -> int:
        return int(self._start_ends[-1])

    def locate(self, k: int) -> tuple[int, int]:
        """Start number k in [0, num_starts) → (sequence index, frame position)."""
        i = int(np.searchsorted(self._start_ends, k, side="right"))
        return i, int(k - (self._start_ends[i - 1] if i else 0))

    def __repr__(self) -> str:
        return (f"BedlamIndex({str(self.root)!r}, split={self.split!r}, {len(self.sequences)} sequences, "
                f"{self.num_starts} start frames)")


# ---------------------------------------------------------------- view sampling


def sample_frame_positions(num_frames: int, start: int, num_views: int, rng: np.random.Generator) -> list[int]:
    """Positions (in a sequence of `num_frames`) of the views of a sample starting at `start`.

    The official rule (`get_seq_from_start_id` with video_prob = fix_interval_prob = 1):
    with r = num_frames − 1 − start frames after the start and r ≥ num_views − 1, the views are
    start + k·s with one stride s uniform in [1, min(MAX_INTERVAL, r // (num_views − 1))].
    A shorter tail (possible as starts only need 2 frames after them) re-draws the start a uniform in
    [0, start], takes u = r frames a + k·s with s uniform in [1, min(MAX_INTERVAL, (num_frames − 1 − a)
    // (u − 1))], and repeats them cyclically: e.g. [a, a+s, a, a+s] for 4 views.
    """
    remaining = num_frames - 1 - start
    if remaining < 2:
        raise ValueError(f"start {start} leaves {remaining} frame(s) after it; need 2")
    if remaining >= num_views - 1:
        stride = int(rng.integers(1, min(MAX_INTERVAL, remaining // (num_views - 1)) + 1))
        return [start + k * stride for k in range(num_views)]
    unique = remaining
    a = int(rng.integers(0, start + 1))
    stride = int(rng.integers(1, min(MAX_INTERVAL, (num_frames - 1 - a) // (unique - 1)) + 1))
    pos = [a + k * stride for k in range(unique)]
    return [pos[k % unique] for k in range(num_views)]


def view_input_masks(view: int, rng: np.random.Generator) -> tuple[bool, bool]:
    """(img_mask, ray_mask): view 0 gives its image only; later views image only, ray map only or both
    with the official probabilities (BEDLAM is metric, so the ray map may be given)."""
    if view == 0:
        return True, False
    r = rng.random()
    if r < VIEW_INPUT_P[0]:
        return True, False
    if r < VIEW_INPUT_P[0] + VIEW_INPUT_P[1]:
        return False, True
    return True, True


# ---------------------------------------------------------------- file readers


def _read_png(path: Path) -> PIL.Image.Image:
    try:
        with PIL.Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read the image ({e})") from None


def read_rgb(path: Path) -> PIL.Image.Image:
    return _read_png(path).convert("RGB")


def read_mask(path: Path) -> PIL.Image.Image:
    """Mode 'L' image; the official loader keeps the first (red) channel of colour masks."""
    im = _read_png(path)
    return im if im.mode == "L" else im.convert("RGB").getchannel("R")


def read_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] metres with non-finite and > MAX_DEPTH values set to 0 (invalid)."""
    try:
        depth = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read the depth map ({e})") from None
    if depth.shape != shape or not np.issubdtype(depth.dtype, np.floating):
        raise DataError(f"{path}: depth map is {depth.dtype} {depth.shape}, expected float {shape} like its image")
    depth = depth.astype(np.float32)
    depth[~np.isfinite(depth) | (depth > MAX_DEPTH)] = 0.0
    return depth


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(z)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read the archive ({e})") from None


def read_camera(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics [3, 3], camera-to-world [4, 4]) as float64."""
    z = _load_npz(path)
    out = []
    for key, shape in (("intrinsics", (3, 3)), ("pose", (4, 4))):
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


def read_smpl(smpl_dir: Path, frame: str) -> dict[str, np.ndarray]:
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


def select_humans(people: dict[str, np.ndarray], max_humans: int) -> dict[str, np.ndarray]:
    """Drop people with transl z ≤ MIN_HUMAN_DEPTH, sort the rest by increasing z (stable), keep the
    first `max_humans` in slots: batch key → [max_humans, *shape] (zeros past the last) + smpl_mask."""
    z = people["smpl_transl"][:, 2]
    keep = np.flatnonzero(z > MIN_HUMAN_DEPTH)
    keep = keep[np.argsort(z[keep], kind="stable")][:max_humans]
    out = {}
    for key, (_, shape) in SMPL_KEYS.items():
        slots = np.zeros((max_humans, *shape), np.float32)
        slots[:len(keep)] = people[key][keep]
        out[key] = slots
    out["smpl_mask"] = np.arange(max_humans) < len(keep)
    return out


# ---------------------------------------------------------------- crop and resize


def _rescale_intrinsics(K: np.ndarray, in_size, out_size, scale: float) -> np.ndarray:
    """Intrinsics after scaling an image of in_size by `scale` and cutting a centred out_size window.

    Scaling is about the pixel corner (principal point +½, scale, −½: pixel centres at integers);
    the window's offset is half the margin (may be fractional), as the official camera_matrix_of_crop."""
    offset = 0.5 * (np.asarray(in_size) * scale - np.asarray(out_size))
    K = K.copy()
    K[:2, 2] += 0.5
    K[:2, :] *= scale
    K[:2, 2] -= offset
    K[:2, 2] -= 0.5
    return K


def _crop(rgb, depth, mask, K, box):
    left, top, right, bottom = box
    K = K.copy()
    K[0, 2] -= left
    K[1, 2] -= top
    return rgb.crop(box), depth[top:bottom, left:right], mask.crop(box), K


def _resize_nearest_opencv(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV INTER_NEAREST (source index floor(i · in/out), no half-pixel shift), which the official
    code uses for depth; PIL's NEAREST (used for masks) samples pixel centres instead."""
    h, w = a.shape
    xs = np.minimum(np.floor(np.arange(width) * (1.0 / (width / w))).astype(np.int64), w - 1)
    ys = np.minimum(np.floor(np.arange(height) * (1.0 / (height / h))).astype(np.int64), h - 1)
    return a[ys[:, None], xs[None, :]]


def crop_resize(rgb: PIL.Image.Image, depth: np.ndarray, mask: PIL.Image.Image, K: np.ndarray,
                resolution: tuple[int, int], enlarge: int = 0, *, name: str = "view"):
    """The official `_crop_resize_if_necessary` (with mask): image, depth [H, W], mask and intrinsics
    [3, 3] together → (rgb, depth, mask) at resolution (W, H) and the new intrinsics.

    1. Crop the largest window centred on the rounded principal point.
    2. Scale by s = max((resolution + enlarge) / size) + 1e-8 to floor(size · s) pixels (LANCZOS when
       shrinking, else bicubic; depth OpenCV-nearest; mask PIL-nearest); intrinsics scaled by s.
    3. Crop the centred resolution window (offset rounded half-to-even).
    """
    width, height = rgb.size
    cx, cy = (int(c) for c in np.round(K[:2, 2]))
    mx, my = min(cx, width - cx), min(cy, height - cy)
    if not (mx > width / 5 and my > height / 5):
        raise DataError(f"{name}: principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) is too far from the centre "
                        f"of the {width}x{height} image")
    rgb, depth, mask, K = _crop(rgb, depth, mask, K, (cx - mx, cy - my, cx + mx, cy + my))

    size = np.array(rgb.size)
    scale = max((np.array(resolution) + enlarge) / size) + 1e-8
    out = np.floor(size * scale).astype(int)
    rgb = rgb.resize(tuple(out), PIL.Image.Resampling.LANCZOS if scale < 1 else PIL.Image.Resampling.BICUBIC)
    depth = _resize_nearest_opencv(depth, *out)
    mask = mask.resize(tuple(out), PIL.Image.Resampling.NEAREST)
    K = _rescale_intrinsics(K, size, out, scale)

    # The official code derives the window from the intrinsics of a centred crop; same arithmetic here
    # so that half-pixel offsets round the same way.
    K_centred = _rescale_intrinsics(K, out, resolution, 1)
    left, top = (int(v) for v in np.round(K[:2, 2] - K_centred[:2, 2]))
    return _crop(rgb, depth, mask, K, (left, top, left + resolution[0], top + resolution[1]))


# ---------------------------------------------------------------- colour and rays


def jitter_params(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One SeqColorJitter draw: (order of the 4 ops [4], factors [brightness, contrast, saturation, hue])."""
    order = rng.permutation(4)
    factors = np.concatenate([rng.uniform(0.5, 1.5, 3), rng.uniform(-0.1, 0.1, 1)])
    return order, factors


def color_jitter(img: PIL.Image.Image, params) -> PIL.Image.Image:
    """torchvision's PIL colour ops (ImageEnhance and an 8-bit hue rotation) in the drawn order."""
    order, (brightness, contrast, saturation, hue) = params
    for op in order:
        if op == 0:
            img = PIL.ImageEnhance.Brightness(img).enhance(brightness)
        elif op == 1:
            img = PIL.ImageEnhance.Contrast(img).enhance(contrast)
        elif op == 2:
            img = PIL.ImageEnhance.Color(img).enhance(saturation)
        else:
            h, s, v = img.convert("HSV").split()
            # uint8 of the truncated shift; wrapping around 256 rotates the hue circle
            shifted = (np.asarray(h, np.int64) + int(hue * 255)) % 256
            h = PIL.Image.fromarray(shifted.astype(np.uint8), "L")
            img = PIL.Image.merge("HSV", (h, s, v)).convert("RGB")
    return img


def img_norm(img: PIL.Image.Image) -> np.ndarray:
    """uint8 RGB → float32 [H, W, 3] (x/255 − 0.5)/0.5 (torchvision ToTensor + Normalize(0.5, 0.5))."""
    x = np.asarray(img, np.float32) / np.float32(255)
    return (x - np.float32(0.5)) / np.float32(0.5)


def ray_map(c2w_ref: np.ndarray, c2w: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [H, W, 6]: the official ray map of a view relative to view 0 (origin, unit direction).

    With T = inv(c2w_ref) · c2w and d = K⁻¹ (u, v, 1) at integer pixel (u, v), origin = T's
    translation and direction = normalise(R d + t): the official code maps d as a point, translation
    included, so directions of views other than the reference are not pure rotations of d.
    Inputs are rounded to float32 first, as the official views hold them.
    """
    T = (np.linalg.inv(c2w_ref.astype(np.float32)) @ c2w.astype(np.float32)).astype(np.float64)
    M = T[:3, :3] @ np.linalg.inv(K.astype(np.float32)).astype(np.float64)  # pixel → direction, one 3×3
    out = np.empty((height, width, 6), np.float32)
    out[..., :3] = T[:3, 3]
    d = (np.arange(height, dtype=np.float64)[:, None, None] * M[:, 1]
         + np.arange(width, dtype=np.float64)[None, :, None] * M[:, 0] + (M[:, 2] + T[:3, 3]))
    out[..., 3:] = d / np.sqrt(np.einsum("hwc,hwc->hw", d, d))[..., None]
    return out


# ---------------------------------------------------------------- samples and batches


def load_sample(index: BedlamIndex, rng: np.random.Generator, resolution: tuple[int, int], *,
                aug_crop: int = 16, max_humans: int = 10, jitter: bool = True) -> dict[str, np.ndarray]:
    """One multi-view sample at resolution (W, H): the batch schema without the leading B axis (and
    without `step`). Every random choice comes from `rng`, in a fixed order, so equal generator states
    give equal samples: a start frame uniform over `index.num_starts`, the views
    (`sample_frame_positions`), one colour jitter for all views, then per view the crop enlargement
    (0 … aug_crop − 1 px) and the input masks."""
    width, height = resolution
    seq_idx, start = index.locate(int(rng.integers(index.num_starts)))
    seq = index.sequences[seq_idx]
    positions = sample_frame_positions(len(seq.frames), start, index.num_views, rng)
    colour = jitter_params(rng) if jitter else None  # one draw shared by all views (SeqColorJitter)

    views = []
    for v, pos in enumerate(positions):
        frame = seq.frames[pos]
        rgb_path = seq.path / "rgb" / f"{frame}.png"
        rgb = read_rgb(rgb_path)
        mask = read_mask(seq.path / "mask" / f"{frame}.png")
        if mask.size != rgb.size:
            raise DataError(f"{seq.path / 'mask' / frame}.png: mask is {mask.size}, its image {rgb.size}")
        depth = read_depth(seq.path / "depth" / f"{frame}.npy", rgb.size[::-1])
        K, c2w = read_camera(seq.path / "cam" / f"{frame}.npz")
        humans = select_humans(read_smpl(seq.path / "smpl", frame), max_humans)

        enlarge = int(rng.integers(0, aug_crop)) if aug_crop > 1 else 0
        rgb, depth, mask, K = crop_resize(rgb, depth, mask, K, resolution, enlarge, name=str(rgb_path))
        img_mask, ray_mask = view_input_masks(v, rng)
        if colour is not None:
            rgb = color_jitter(rgb, colour)
        views.append(dict(
            img=img_norm(rgb), depth=depth, valid=depth > 0, K=K.astype(np.float32), c2w=c2w.astype(np.float32),
            human_mask=(np.asarray(mask, np.float32) / np.float32(255) > 0.5).astype(np.float32),
            img_mask=np.bool_(img_mask), ray_mask=np.bool_(ray_mask), frame_ids=np.int32(pos), **humans))

    for view in views:
        view["ray_map"] = ray_map(views[0]["c2w"], view["c2w"], view["K"], height, width)
    sample = {k: np.stack([view[k] for view in views]) for k in views[0]}
    sample["seq_index"] = np.int32(seq_idx)
    return sample


def batch_resolution(seed: int, step: int, resolutions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The (W, H) of batch `step`: the official sampler's weights, first half of the list ×2."""
    p = np.ones(len(resolutions))
    p[:len(resolutions) // 2] *= 2
    i = np.random.default_rng([seed, step, _RESOLUTION_STREAM]).choice(len(resolutions), p=p / p.sum())
    return tuple(resolutions[i])


def make_batch(index: BedlamIndex, *, seed: int, step: int, batch_size: int,
               resolutions: Sequence[tuple[int, int]] = OFFICIAL_RESOLUTIONS, **sample_kw) -> dict[str, np.ndarray]:
    """Batch number `step` (the schema above), a pure function of (seed, step)."""
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be non-negative, got {seed}, {step}")
    resolution = batch_resolution(seed, step, resolutions)
    samples = [load_sample(index, np.random.default_rng([seed, step, i]), resolution, **sample_kw)
               for i in range(batch_size)]
    batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    batch["step"] = np.int64(step)
    return batch


# ---------------------------------------------------------------- tf.data


_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


def _close_live_iterators():
    for it in list(_LIVE_ITERATORS):
        it.close()


def import_tensorflow():
    """Import TensorFlow lazily, quiet, and hidden from every GPU (the accelerator belongs to JAX)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("the BEDLAM training pipeline needs TensorFlow: pip install human3r-jax[train]") from e
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices
        if tf.config.get_visible_devices("GPU"):
            log.warning("TensorFlow was initialised with a visible GPU before the data pipeline could hide it")
    # Registered after TensorFlow's own exit hooks so that it runs before them (atexit is LIFO).
    atexit.unregister(_close_live_iterators)
    atexit.register(_close_live_iterators)
    return tf


def make_dataset(index: BedlamIndex, *, batch_size: int, seed: int, start_step: int = 0,
                 resolutions: Sequence[tuple[int, int]] = OFFICIAL_RESOLUTIONS, num_parallel: int | None = None,
                 prefetch: int = 2, **sample_kw):
    """An endless tf.data.Dataset of batches start_step, start_step + 1, … (dicts of tensors, the
    schema above; H and W static None). num_parallel: batches built at once (default AUTOTUNE);
    sample_kw: aug_crop, max_humans, jitter as in `load_sample`.

    Prefer `iterate`: a raw iterator of this dataset that is still alive when Python exits can hang
    the process (a batch being built in Python while the interpreter finalises); delete it first."""
    tf = import_tensorflow()
    spec = batch_spec(batch_size, index.num_views, sample_kw.get("max_humans", 10))
    keys = list(spec)

    def build(step):
        batch = make_batch(index, seed=seed, step=int(step), batch_size=batch_size, resolutions=resolutions,
                           **sample_kw)
        return tuple(batch[k] for k in keys)

    def to_batch(step):
        arrays = tf.numpy_function(build, [step], [tf.as_dtype(spec[k][0]) for k in keys], stateful=False)
        return {k: tf.ensure_shape(a, spec[k][1]) for k, a in zip(keys, arrays)}

    parallel = tf.data.AUTOTUNE if num_parallel is None else num_parallel
    ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    return ds.map(to_batch, num_parallel_calls=parallel, deterministic=True).prefetch(prefetch)


class BatchIterator:
    """Numpy batches of a dataset; `close()` (also run at interpreter exit) stops its tf.data iterator
    while Python can still finish the batches in flight."""

    def __init__(self, dataset):
        self._it = dataset.as_numpy_iterator()
        _LIVE_ITERATORS.add(self)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            raise StopIteration
        tf = import_tensorflow()
        try:
            return next(self._it)
        except tf.errors.OpError as e:  # a DataError raised inside tf.data arrives wrapped in TF's text
            found = re.search(r"DataError: (.+)", e.message or "")
            raise DataError(found.group(1).strip() if found else f"data pipeline: {e.message}") from None

    def close(self) -> None:
        self._it = None  # the last reference: TensorFlow cancels and joins its workers here


def iterate(index: BedlamIndex, **kwargs) -> BatchIterator:
    """`make_dataset(index, **kwargs)` as numpy dicts (same arguments)."""
    return BatchIterator(make_dataset(index, **kwargs))
