"""Known cameras for `human3r-jax reconstruct`: the user's intrinsics and camera poses, read and checked, and
the geometry that puts them in place of the model's estimates.

Intrinsics (`parse_intrinsics` → K [F or 1, 3, 3], pixels of the input frames, pixel centres at integers):
    fx,fy,cx,cy            the option's text: one camera for every frame
    FILE.npy               [3, 3] or [F, 3, 3] (one K per input frame, before --subsample)
    FILE.txt               3 rows of 3 numbers (one K), or rows of 9 numbers (one K per input frame)
    FILE.json              {"K": 3x3 or [F, 3, 3]}, {"fx": …, "fy": …, "cx": …, "cy": …}, or a list of 3x3
    cameras.txt            COLMAP, one camera (any model: fx, fy, cx, cy are taken, the distortion ignored;
                           COLMAP's first pixel centre is (0.5, 0.5), ours (0, 0))
Camera poses (`load_poses` → camera-to-world [4, 4] of each processed frame, by frame index):
    TUM                    time tx ty tz qx qy qz qw per line (camera-to-world), matched to the frames by
                           time (RawFrame.time: seconds for videos, the frame number for image folders),
                           the nearest within half an input frame interval
    COLMAP images.txt      IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME (world-to-camera) then a line of
                           2-D points; matched by NAME to an image folder's file names, or for a video one
                           image per processed frame in NAME order
The geometry: `points_from_depth` and `move_heads` (jit-able, batched: the loop's given K), `umeyama` and
`align_trajectory` (the Sim(3) from the predicted to the given camera centres), `move_frame` (a frame file
moved onto its given pose, the scene scaled).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from human3r_jax.data.images import intrinsics_to_model
from human3r_jax.data.video import FrameSource
from human3r_jax.errors import Human3rError
from human3r_jax.geometry import quat_to_matrix

INTRINSICS_HELP = (
    "fx,fy,cx,cy in pixels of the input frames, or a file: .npy ([3, 3] or one per input frame [F, 3, 3]), "
    ".txt (3 rows of 3, or rows of 9 per frame), .json ({'K': …} or {'fx', 'fy', 'cx', 'cy'}), COLMAP cameras.txt"
)
POSES_HELP = (
    "TUM (time tx ty tz qx qy qz qw, camera-to-world, matched by time) or COLMAP images.txt "
    "(world-to-camera, matched by image name, or in name order for a video)"
)

# COLMAP camera models: parameter count, and whether the first parameter is the one focal (f, cx, cy, …).
_COLMAP_MODELS = {
    "SIMPLE_PINHOLE": (3, True),
    "PINHOLE": (4, False),
    "SIMPLE_RADIAL": (4, True),
    "RADIAL": (5, True),
    "OPENCV": (8, False),
    "OPENCV_FISHEYE": (8, False),
    "FULL_OPENCV": (12, False),
    "FOV": (5, False),
    "SIMPLE_RADIAL_FISHEYE": (4, True),
    "RADIAL_FISHEYE": (5, True),
    "THIN_PRISM_FISHEYE": (12, False),
    "RAD_TAN_THIN_PRISM_FISHEYE": (16, False),
}


class CameraError(Human3rError):
    """Given intrinsics or camera poses that cannot be used; the message names the option, file and row."""


# ---------------------------------------------------------------- intrinsics


def parse_intrinsics(value, option: str = "--intrinsics") -> np.ndarray:
    """The user's intrinsics → K [F or 1, 3, 3] float64 (pixels of the input frames).

    value: the option's text (fx,fy,cx,cy or a file name, see the module docstring), a Path, or an array
    [3, 3] / [F, 3, 3]."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        if path.is_file():
            return _read_intrinsics_file(path)
        numbers = _numbers(str(value).replace(",", " "))
        if numbers is None:
            raise CameraError(f"{option}: {value}: no such file; expected {INTRINSICS_HELP}")
        if len(numbers) != 4:
            raise CameraError(f"{option}: expected fx,fy,cx,cy (4 numbers) or a file, got {value!r}")
        return _checked(_pinhole(*numbers)[None], option)
    try:
        k = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise CameraError(f"{option}: expected {INTRINSICS_HELP}, or a [3, 3] / [F, 3, 3] array") from None
    return _checked(_stacked(k, option), option)


def _stacked(k: np.ndarray, where: str) -> np.ndarray:
    """K [3, 3] or [F, 3, 3] → [F, 3, 3] (F ≥ 1)."""
    k = k[None] if k.shape == (3, 3) else k
    if k.ndim != 3 or k.shape[1:] != (3, 3) or not len(k):
        raise CameraError(f"{where}: expected a 3x3 K or a list of them ([F, 3, 3]), got shape {list(k.shape)}")
    return k


def _numbers(text: str) -> list[float] | None:
    """The whitespace-separated numbers of `text` (None when one is not a number)."""
    try:
        return [float(t) for t in text.split()]
    except ValueError:
        return None


def _pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)


def _checked(k: np.ndarray, where: str, rows: Sequence[str] | None = None) -> np.ndarray:
    """k [F, 3, 3], refused unless each is a pinhole K [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with finite
    values and positive focal lengths; the message names matrix i (or rows[i])."""
    pinhole = (k[:, 0, 1] == 0) & (k[:, 1, 0] == 0) & (k[:, 2] == [0, 0, 1]).all(-1)
    for test, what in (
        (np.isfinite(k).all((1, 2)), "non-finite value"),
        (pinhole, "not a pinhole K [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]"),
        ((k[:, 0, 0] > 0) & (k[:, 1, 1] > 0), "the focal lengths must be positive"),
    ):
        if not test.all():
            i = int(np.argmin(test))
            at = where if len(k) == 1 and rows is None else f"{where}: {rows[i] if rows else f'matrix {i}'}"
            fx, fy, cx, cy = k[i, 0, 0], k[i, 1, 1], k[i, 0, 2], k[i, 1, 2]
            raise CameraError(f"{at}: {what} (fx={fx:g}, fy={fy:g}, cx={cx:g}, cy={cy:g})")
    return k


def _read_intrinsics_file(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy_k(path)
    if suffix not in (".txt", ".json"):
        raise CameraError(f"{path}: intrinsics files are .npy, .txt or .json, got {suffix or 'no extension'}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CameraError(f"{path}: cannot read the intrinsics ({e})") from None
    if suffix == ".json":
        return _json_k(path, text)
    lines = _data_lines(text)
    if lines and re.fullmatch(r"\d+\s+[A-Z_]+(\s.*)?", lines[0][1].strip()):  # CAMERA_ID MODEL …
        return _colmap_k(path, lines)
    return _text_k(path, lines)


def _read_npy_k(path: Path) -> np.ndarray:
    """The header's shape is checked before anything is read (memory-mapped: a header declaring more than
    the file holds fails there)."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise CameraError(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iuf":
        raise CameraError(f"{path}: expected one numeric array in a .npy file")
    return _checked(np.array(_stacked(a, str(path)), np.float64), str(path))  # shape checked, then read


def _json_k(path: Path, text: str) -> np.ndarray:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CameraError(f"{path}: not JSON ({e})") from None
    if isinstance(doc, dict) and {"fx", "fy", "cx", "cy"} <= doc.keys():
        values = [doc[n] for n in ("fx", "fy", "cx", "cy")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise CameraError(f"{path}: fx, fy, cx, cy must be numbers")
        return _checked(_pinhole(*values)[None], str(path))
    k = doc.get("K") if isinstance(doc, dict) else doc
    if k is None:
        raise CameraError(f"{path}: expected {{'K': 3x3 or a list of 3x3}}, {{'fx', 'fy', 'cx', 'cy'}} or a list")
    try:
        k = np.asarray(k, np.float64)
    except (ValueError, TypeError):
        raise CameraError(f"{path}: K must be 3x3 numbers (or a list of them)") from None
    return _checked(_stacked(k, str(path)), str(path))


def _data_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines that are neither blank nor # comments."""
    lines = enumerate(text.splitlines(), 1)
    return [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]


def _text_k(path: Path, lines: list[tuple[int, str]]) -> np.ndarray:
    rows = []
    for n, line in lines:
        numbers = _numbers(line.replace(",", " "))
        if numbers is None or len(numbers) not in (3, 9):
            raise CameraError(f"{path}: line {n}: expected 3 numbers (a row of K) or 9 (one K per frame), got {line!r}")
        rows.append(numbers)
    if not rows:
        raise CameraError(f"{path}: no numbers")
    if len(rows[0]) == 3:
        if len(rows) != 3 or any(len(r) != 3 for r in rows):
            raise CameraError(f"{path}: expected 3 rows of 3 numbers (one K) or rows of 9 (one K per frame)")
        return _checked(np.asarray(rows)[None], str(path))
    bad = next((n for (n, _), r in zip(lines, rows) if len(r) != 9), None)
    if bad is not None:
        raise CameraError(f"{path}: line {bad}: expected 9 numbers like the first row")
    return _checked(np.asarray(rows).reshape(-1, 3, 3), str(path), [f"line {n}" for n, _ in lines])


def _colmap_k(path: Path, lines: list[tuple[int, str]]) -> np.ndarray:
    """COLMAP cameras.txt: CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]; exactly one camera."""
    if len(lines) != 1:
        raise CameraError(f"{path}: holds {len(lines)} COLMAP cameras; give a cameras.txt with one")
    n, line = lines[0]
    tokens = line.split()
    model, params = tokens[1], _numbers(" ".join(tokens[4:]))
    if model not in _COLMAP_MODELS:
        raise CameraError(f"{path}: line {n}: unknown COLMAP camera model {model!r}")
    count, one_focal = _COLMAP_MODELS[model]
    if params is None or len(params) != count or len(tokens) < 4:
        raise CameraError(f"{path}: line {n}: {model} takes {count} numeric parameters, got {' '.join(tokens[4:])!r}")
    fx, fy, cx, cy = (params[0], params[0], params[1], params[2]) if one_focal else params[:4]
    return _checked(_pinhole(fx, fy, cx - 0.5, cy - 0.5)[None], f"{path}: line {n}")


def frame_stamps(source: FrameSource) -> list[tuple[int, str, float]]:
    """(index, name, time) of each frame the source yields, as RawFrame has them: an image folder's from its
    file list, a video's by decoding it once."""
    if source.kind == "images":
        stamps = [(i, f.name, float(i)) for i, f in enumerate(source.files) if i % source.subsample == 0]
        return stamps[: source.max_frames] if source.max_frames else stamps
    return [(r.index, r.name, r.time) for r in source]


def check_per_frame(k: np.ndarray, stamps: Sequence[tuple[int, str, float]], option: str) -> None:
    """Per-frame K are indexed by the frame's position in the input: refuse a K list too short for a frame."""
    last = max(stamps, key=lambda s: s[0], default=None)
    if len(k) > 1 and last is not None and last[0] >= len(k):
        raise CameraError(
            f"{option}: {len(k)} matrices, but input frame {last[0]} ({last[1]}) is processed: one K per input "
            f"frame (before --subsample) is needed, at least {last[0] + 1}"
        )


def model_intrinsics(k: np.ndarray, frame, size: int) -> np.ndarray:
    """The given K [F or 1, 3, 3] of one raw frame (RawFrame: index, image) → K [3, 3] of its model input."""
    row = frame.index if len(k) > 1 else 0
    if row >= len(k):
        raise CameraError(f"intrinsics: {len(k)} matrices, none for input frame {frame.index} ({frame.name})")
    return intrinsics_to_model(k[row], *frame.image.size, size)


# ---------------------------------------------------------------- poses


def load_poses(path: str | Path, source: FrameSource, stamps: Sequence[tuple[int, str, float]]) -> dict:
    """The given camera-to-world [4, 4] (float64) of each processed frame, by frame index; a row that does
    not parse, or a frame without its pose, is a CameraError naming the file and row or frame."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CameraError(f"{path}: cannot read the camera poses ({e})") from None
    lines = _data_lines(text)
    if not lines:
        raise CameraError(f"{path}: no camera poses ({POSES_HELP})")
    if len(lines[0][1].split()) == 8:
        return _match_tum(path, _tum_poses(path, lines), source, stamps)
    return _match_colmap(path, _colmap_poses(path, text), source, stamps)


def _rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """[N, 3, 3], [N, 3] → [N, 4, 4]."""
    m = np.tile(np.eye(4), (len(rotation), 1, 1))
    m[:, :3, :3], m[:, :3, 3] = rotation, translation
    return m


def _rotations(path: Path, quats: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """Real-first quaternions [N, 4] → rotations [N, 3, 3] (normalised; a zero one names its line)."""
    norm = np.linalg.norm(quats, axis=-1)
    if not (norm > 1e-8).all():
        raise CameraError(f"{path}: line {rows[int(np.argmin(norm > 1e-8))]}: the quaternion is zero")
    return np.asarray(quat_to_matrix(quats / norm[:, None]), np.float64)


def _tum_poses(path: Path, lines: list[tuple[int, str]]) -> tuple[np.ndarray, np.ndarray]:
    """TUM rows → (times [N], camera-to-world [N, 4, 4])."""
    rows = []
    for n, line in lines:
        numbers = _numbers(line)
        if numbers is None or len(numbers) != 8 or not all(map(math.isfinite, numbers)):
            raise CameraError(f"{path}: line {n}: expected 8 finite numbers (time tx ty tz qx qy qz qw), got {line!r}")
        rows.append(numbers)
    a = np.asarray(rows)
    c2w = _rigid(_rotations(path, a[:, [7, 4, 5, 6]], [n for n, _ in lines]), a[:, 1:4])
    return a[:, 0], c2w


def _colmap_poses(path: Path, text: str) -> dict[str, np.ndarray]:
    """COLMAP images.txt → camera-to-world [4, 4] by image NAME. Each image is two lines (the second, its
    2-D points, may be blank), so blank lines count here."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if not line.lstrip().startswith("#")]
    poses = {}
    for n, line in lines[0::2]:
        tokens = line.split()
        if not tokens and (n, line) == lines[-1]:
            continue  # a blank last line
        numbers = _numbers(" ".join(tokens[1:8]))
        if len(tokens) < 10 or numbers is None or not all(map(math.isfinite, numbers)):
            raise CameraError(
                f"{path}: line {n}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME (COLMAP images.txt) "
                f"or time tx ty tz qx qy qz qw (TUM), got {line[:80]!r}"
            )
        name = Path(" ".join(tokens[9:])).name
        if name in poses:
            raise CameraError(f"{path}: line {n}: a second image named {name!r}")
        w2c = _rigid(_rotations(path, np.asarray([numbers[:4]]), [n]), np.asarray([numbers[4:7]]))[0]
        poses[name] = np.linalg.inv(w2c)
    return poses


def _match_tum(path: Path, tum, source: FrameSource, stamps) -> dict:
    """Each frame's nearest pose in time, within half an input frame interval."""
    times, c2w = tum
    half = 0.5 / source.fps if source.kind == "video" and source.fps else 0.5
    order = np.argsort(times)
    times, c2w = times[order], c2w[order]
    out = {}
    for index, name, t in stamps:
        j = int(np.clip(np.searchsorted(times, t), 1, len(times) - 1)) if len(times) > 1 else 0
        j = j - 1 if j > 0 and abs(times[j - 1] - t) <= abs(times[j] - t) else j
        if abs(times[j] - t) > half * (1 + 1e-6):
            raise CameraError(
                f"{path}: no pose within {half:.4g} of frame {index} ({name}, time {t:.6g}); its {len(times)} "
                f"poses span times {times[0]:.6g} to {times[-1]:.6g}"
            )
        out[index] = c2w[j]
    return out


def _natural(name: str) -> list:
    """Sort key: the digits in a name compared as numbers (frame_9 before frame_10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _match_colmap(path: Path, poses: dict, source: FrameSource, stamps) -> dict:
    """An image folder's frames by file name; a video's in order, one image per processed frame."""
    if source.kind == "images":
        missing = next((s for s in stamps if s[1] not in poses), None)
        if missing is not None:
            raise CameraError(f"{path}: no image named {missing[1]!r} (frame {missing[0]}); it holds {len(poses)}")
        return {index: poses[name] for index, name, _ in stamps}
    if len(poses) != len(stamps):
        raise CameraError(
            f"{path}: {len(poses)} images, but the video gives {len(stamps)} frames (after --subsample and "
            "--max-frames): for a video, one image per processed frame, in name order"
        )
    names = sorted(poses, key=_natural)
    return {index: poses[name] for (index, _, _), name in zip(stamps, names)}


# ---------------------------------------------------------------- geometry


def points_from_depth(depth, k):
    """Camera-frame points [B, H, W, 3] of depth [B, H, W] seen through K [B, 3, 3] (pixel centres at
    integers): x = (u − cx) z / fx, y = (v − cy) z / fy."""
    _, h, w = depth.shape
    u = jnp.arange(w, dtype=depth.dtype)[None, None, :]
    v = jnp.arange(h, dtype=depth.dtype)[None, :, None]
    fx, fy, cx, cy = (k[:, i, j, None, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return jnp.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], -1)


def move_heads(transl, focal, k, h: int, w: int):
    """Head positions transl [B, S, 3] moved to keep their depth and the pixel they have under the estimated
    K (focal [B], principal point (w//2, h//2), as `runtime.intrinsics`) under the given K [B, 3, 3]:
    u = f x/z + w//2, x' = (u − cx') z / fx' (written without dividing by z)."""
    x, y, z = transl[..., 0], transl[..., 1], transl[..., 2]
    f = focal[:, None]
    fx, fy, cx, cy = (k[:, i, j, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return jnp.stack([(f * x + (w // 2 - cx) * z) / fx, (f * y + (h // 2 - cy) * z) / fy, z], -1)


def umeyama(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity (s, R [3, 3], t [3]) minimising Σ‖s R x_i + t − y_i‖² over points x, y [N, 3]
    (Umeyama 1991). For collinear points the rotation about their line is arbitrary; s and the fit are not."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    u, d, vt = np.linalg.svd(yc.T @ xc / len(x))
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0  # a rotation, not a reflection
    r = (u * sign) @ vt
    s = float((d * sign).sum() / (xc**2).sum(1).mean())
    return s, r, my - s * r @ mx


def align_trajectory(predicted: np.ndarray, given: np.ndarray) -> dict:
    """The Sim(3) from the predicted camera centres [N, 3] onto the given ones, with the ATE (RMS centre
    distance, in the given units) before (raw) and after it. When either trajectory has no extent (one
    frame, or a camera that does not move) no scale can be fitted: s = 1, R = I, t = the mean offset."""
    predicted, given = np.asarray(predicted, np.float64), np.asarray(given, np.float64)

    def extent(c):
        return np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean())

    fitted = min(extent(predicted) / (1 + np.abs(predicted).max()), extent(given) / (1 + np.abs(given).max())) > 1e-6
    if fitted:
        s, r, t = umeyama(predicted, given)
    else:
        s, r, t = 1.0, np.eye(3), given.mean(0) - predicted.mean(0)

    def ate(c):
        return float(np.sqrt(((c - given) ** 2).sum(1).mean()))

    return {
        "frames": len(given),
        "scale": s,
        "scale_fitted": bool(fitted),
        "rotation": r.tolist(),
        "translation": t.tolist(),
        "ate_before": ate(predicted),
        "ate_after": ate(s * predicted @ r.T + t),
    }


def move_frame(frame: dict, predicted: np.ndarray, given: np.ndarray, scale: float) -> dict:
    """A frame file's arrays moved from its predicted camera-to-world [4, 4] onto the given one, the scene
    scaled by `scale` about the camera: depth and camera-frame points × s, each head (smpl_transl) × s along
    its viewing ray, the bodies moved with their heads (their size kept: x_cam = R (x − J_head) + t shifts
    rigidly with t)."""
    out = dict(frame)
    pred_r, pred_t = predicted[:3, :3].astype(np.float64), predicted[:3, 3].astype(np.float64)
    r, t = given[:3, :3], given[:3, 3]

    def to_camera(x):
        return (np.asarray(x, np.float64) - pred_t) @ pred_r

    def to_world(x):
        return (x @ r.T + t).astype(np.float32)

    out["c2w"] = np.asarray(given, np.float32)
    out["depth"] = (frame["depth"] * scale).astype(np.float32)
    out["pts3d_world"] = to_world(scale * to_camera(frame["pts3d_world"]))
    if "smpl_transl" in frame:
        transl = np.asarray(frame["smpl_transl"], np.float64)
        out["smpl_transl"] = (scale * transl).astype(np.float32)
        shift = ((scale - 1) * transl)[:, None]
        for key in ("smpl_verts_world", "smpl_joints_world"):
            if key in frame:
                out[key] = to_world(to_camera(frame[key]) + shift)
    return out
