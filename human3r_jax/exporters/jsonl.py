"""JSON Lines: one frame of a reconstruction a line, for clients in any language.

Each line is one JSON object (no NaN or Infinity: a value that is not finite is written as null):

    {"frame": 0,                        index in the reconstruction (frames/NNNNNN.npz)
     "frame_index": 0,                  frame number in the input (before --subsample)
     "name": "frame_000000",            input file name, or frame_NNNNNN for videos
     "time": 0.0,                       seconds (videos) or frame number (images), rounded to 1e-6
     "camera": {"c2w": [4][4],          camera-to-world, OpenCV axes (x right, y down, z forward)
                "K": [3][3],            pinhole intrinsics at width × height (pixel centres at integers)
                "width": 512, "height": 384},     the model input's size
     "people": [{"id": 3,               track id, the same person's over the frames
                 "score": 0.9,          detection score
                 "pelvis_world": [3],   the pelvis (SMPL-X joint 0) in the world
                 "joints_world": [127][3] (or [22][3] body joints with body_only), SMPL-X's output joints
                 "smplx": {...}}]}      the body's SMPL-X parameters, below

The world is the reconstruction's: the first camera's frame, OpenCV axes (so "up" is −y), metres.

"smplx" holds the parameters under the `smplx` package's names, every rotation as an axis-angle vector
(radians): "global_orient_cam" [3] (the body's orientation in the camera frame), "body_pose" [21][3],
"left_hand_pose" [15][3] and "right_hand_pose" [15][3] (full hand poses around a flat hand:
`smplx.create(..., "smplx", gender="neutral", use_pca=False, flat_hand_mean=True, num_betas=10,
num_expression_coeffs=10)`), "jaw_pose" [3] (the eyes are at rest), "betas" [10], "expression" [10], and
"head_transl_cam" [3]. Human3R places the body by its head, not by a translation: run SMPL-X with
global_orient = 0 and transl = 0, then x_cam = R (x − J₁₅) + head_transl_cam for every vertex and joint x,
with R the rotation of global_orient_cam and J₁₅ the head joint of that forward pass; in the world,
x_world = c2w · x_cam. (SMPL-X's own global_orient would rotate about the pelvis instead.)

Numbers are rounded to 6 significant digits (relative error ≤ 5e-6: at most 50 µm within 10 m) to keep
lines small.

Options of `write`:
    body_only  joints_world holds the 22 body joints (SMPL-X joints 0–21) only (default False: all 127)
    smplx      the SMPL-X model file (or a folder holding smplx/SMPLX_NEUTRAL.npz), for frames written
               without --smplx: their joints are computed from the parameters (default None)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np

from human3r_jax.exporters.folder import ExportError, Reconstruction
from human3r_jax.geometry import rotmat_to_rotvec
from human3r_jax.models.smplx import SmplxModel, bodies_in_camera, load_smplx, to_world

SIGNIFICANT = 6
BODY_JOINTS = 22  # pelvis and the 21 body joints: SMPL-X joints 0–21


def frame_record(frame: dict, joints_world: np.ndarray | None, body_only: bool, *, index: int) -> dict:
    """One frame as a JSON-ready dict (the format above).

    frame: a frame file's arrays (export.FRAME_KEYS); joints_world: [n, 127, 3] the world joints of its n
    people (None: not known, written as null); index: the frame's index in the reconstruction."""
    h, w = frame["image"].shape[:2]
    record = {
        "frame": int(index),
        "frame_index": int(frame["frame_index"]),
        "name": str(frame["frame_name"]),
        "time": _finite(round(float(frame["time"]), 6)),
        "camera": {"c2w": _rounded(frame["c2w"]), "K": _rounded(frame["intrinsics"]), "width": w, "height": h},
        "people": [],
    }
    for n, track in enumerate(frame.get("smpl_id", ())):
        joints = None if joints_world is None else joints_world[n][: BODY_JOINTS if body_only else None]
        rv = np.asarray(_rotvecs(np.asarray(frame["smpl_rotmat"][n], np.float32)))  # [53, 3]
        record["people"].append(
            {
                "id": int(track),
                "score": _rounded(frame["smpl_score"][n]),
                "pelvis_world": None if joints is None else _rounded(joints[0]),
                "joints_world": None if joints is None else _rounded(joints),
                "smplx": {
                    "global_orient_cam": _rounded(rv[0]),
                    "body_pose": _rounded(rv[1:22]),
                    "left_hand_pose": _rounded(rv[22:37]),
                    "right_hand_pose": _rounded(rv[37:52]),
                    "jaw_pose": _rounded(rv[52]),
                    "betas": _rounded(frame["smpl_shape"][n]),
                    "expression": _rounded(frame["smpl_expression"][n]),
                    "head_transl_cam": _rounded(frame["smpl_transl"][n]),
                },
            }
        )
    return record


class JsonLinesWriter:
    """Appends records to a JSON Lines file (created if missing), each as one line ending in "\\n",
    written with one unbuffered write call, so a reader tailing the file sees every line once it is
    whole (a last line without its "\\n" is still being written: wait for the rest). A context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (closed by close / __exit__)

    def add(self, record: dict) -> None:
        line = memoryview((json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode())
        while line:  # a regular file takes the line in one call; this only finishes an interrupted one
            line = line[self._file.write(line) :]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write(
    rec: Reconstruction, dest: Path, body_only: bool = False, smplx: str | Path | SmplxModel | None = None
) -> str:
    """Write every frame of `rec` to the new file `dest`; → the summary line."""
    joints_of = _WorldJoints(rec.path, smplx)
    people = 0
    with JsonLinesWriter(dest) as out:
        for i, f in enumerate(rec.frames()):
            out.add(frame_record(f, joints_of(f), body_only, index=i))
            people += len(f.get("smpl_id", ()))
    if not rec.humans:
        return f"JSON Lines: {rec.n_frames} frames, cameras only (a reconstruction without people)"
    joints = f"{BODY_JOINTS} body joints" if body_only else "127 joints"
    return f"JSON Lines: {rec.n_frames} frames, {people} bodies in all ({joints} each)"


class _WorldJoints:
    """A frame's people → their world joints [n, 127, 3] (None without people): the frame file's (written
    with --smplx), else computed from the parameters with the SMPL-X model `smplx` (a model, or its path:
    loaded when first needed)."""

    def __init__(self, folder: Path, smplx: str | Path | SmplxModel | None):
        self.folder, self.smplx = folder, smplx

    def __call__(self, frame: dict) -> np.ndarray | None:
        if len(frame.get("smpl_id", ())) == 0:
            return None
        if "smpl_joints_world" in frame:
            return frame["smpl_joints_world"]
        if self.smplx is None:
            raise ExportError(f"{self.folder}: the people's joints need the SMPL-X model: pass --smplx PATH")
        if not isinstance(self.smplx, SmplxModel):
            self.smplx = load_smplx(self.smplx)
        return np.asarray(_joints_world(self.smplx, *(frame[k] for k in _PLACEMENT)))


# One person at a time: one shape, compiled once.
_rotvecs = jax.jit(rotmat_to_rotvec)

_PLACEMENT = ("smpl_shape", "smpl_expression", "smpl_rotmat", "smpl_transl", "c2w")


@jax.jit
def _joints_world(model: SmplxModel, betas, expression, rotmats, transl, c2w) -> jax.Array:
    """A frame's n people: SMPL-X parameters → world joints [n, 127, 3] (Human3R's placement)."""
    return to_world(bodies_in_camera(model, betas, expression, rotmats, transl), c2w).joints


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _rounded(a) -> float | list | None:
    """A number or array → (nested lists of) floats with SIGNIFICANT digits, None where not finite."""
    a = np.asarray(a, np.float64)
    flat = [_finite(float(f"{x:.{SIGNIFICANT}g}")) for x in a.ravel().tolist()]
    return np.array(flat, object).reshape(a.shape).tolist() if a.ndim else flat[0]
