"""BVH motion files: one per track id (dest/person_<id>.bvh), the SMPL-X skeleton moving as Human3R placed
the person in the world.

HIERARCHY  ROOT pelvis and the SMPL-X joints with SMPL-X's names and tree (the model's parents): all 55, or
           the 22 body joints (pelvis to the wrists) with `body_only`. OFFSET = J_child − J_parent of the
           track's one rest skeleton (its mean shape and expression, `tracks.track_skeleton`; SMPL-X's rest
           pose, the model's Y-up frame); the root's OFFSET is 0 0 0 (its position channels place it, read
           the same by readers that add the offset and by those that do not). A leaf ends in an End Site that
           continues its incoming bone by half that bone's length (BVH wants a tip; SMPL-X has none).
CHANNELS   root: Xposition Yposition Zposition Zrotation Xrotation Yrotation; other joints: Zrotation
           Xrotation Yrotation. Euler angles in degrees, R = Rz(z) Rx(x) Ry(y) (the common BVH order ZXY;
           its gimbal lock, x = ±90°, is a pose the hips and spine rarely take).
MOTION     Frames: the track's first to last appearance, one line per reconstruction frame (where the person
           is missing in between, the last pose holds). Frame Time: the median spacing of the frame times
           (`tracks.frame_times`: a video's times, or frame number / fps), or 1 / fps for a single frame.
           Root position: the pelvis in the world frame; root rotation: its world rotation R_c2w R_global;
           the others: SMPL-X's local rotations (`tracks.track_pose`).

World frame: Y-up, like the glTF export: the reconstruction's world (the first camera's frame, OpenCV axes
with y down and z forward) rotated 180° about x (y → −y, z → −z), so that the character stands upright in
Blender (import with Y up). Units: metres, or centimetres with units="cm" (offsets and positions × 100).

Options (keyword arguments of `write`; CLI --name-with-dashes):
    smplx      SMPLX_NEUTRAL.npz or its folder (or a loaded SmplxModel); required
    units      "m"     "m" or "cm"
    fps        None    frame rate for the frame times (default: the video's times; 30 for images)
    body_only  False   write the 22 body joints only (no jaw, eyes or fingers)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from human3r_jax.exporters.folder import ExportError, Reconstruction
from human3r_jax.exporters.tracks import (
    DEFAULT_FPS,
    JOINT_NAMES,
    NUM_BODY_JOINTS,
    Y_UP,
    Skeleton,
    Track,
    frame_times,
    gather,
    require_smplx,
    track_pose,
    track_skeleton,
)

UNITS = {"m": 1.0, "cm": 100.0}
ROTATION_CHANNELS = "Zrotation Xrotation Yrotation"


def euler_zxy(r: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] → degrees [..., 3] (z, x, y) with r = Rz(z) Rx(x) Ry(y); at the gimbal
    lock (x = ±90°) y is 0 and z takes the whole turn about the vertical."""
    x = np.arctan2(r[..., 2, 1], np.hypot(r[..., 2, 0], r[..., 2, 2]))
    locked = np.hypot(r[..., 2, 0], r[..., 2, 2]) < 1e-9
    z = np.where(locked, np.arctan2(r[..., 1, 0], r[..., 0, 0]), np.arctan2(-r[..., 0, 1], r[..., 1, 1]))
    y = np.where(locked, 0.0, np.arctan2(-r[..., 2, 0], r[..., 2, 2]))
    return np.degrees(np.stack([z, x, y], -1))


def _children(parents: tuple[int, ...], joints: int) -> list[list[int]]:
    children = [[] for _ in range(joints)]
    for k in range(1, joints):
        children[parents[k]].append(k)
    return children


def _hierarchy(skeleton: Skeleton, joints: int, scale: float) -> tuple[list[str], list[int]]:
    """The HIERARCHY section's lines and the joints in the order their channels appear."""
    offsets = skeleton.offsets() * scale
    children = _children(skeleton.parents, joints)
    lines, order = ["HIERARCHY"], []

    def vec(v) -> str:
        return " ".join(f"{c:.6f}" for c in v)

    def joint(k: int, depth: int) -> None:
        pad = "  " * depth
        order.append(k)
        if k == 0:
            lines.extend([f"ROOT {JOINT_NAMES[0]}", "{", f"  OFFSET {vec(np.zeros(3))}"])
            lines.append(f"  CHANNELS 6 Xposition Yposition Zposition {ROTATION_CHANNELS}")
        else:
            lines.extend([f"{pad}JOINT {JOINT_NAMES[k]}", pad + "{", f"{pad}  OFFSET {vec(offsets[k])}"])
            lines.append(f"{pad}  CHANNELS 3 {ROTATION_CHANNELS}")
        for c in children[k]:
            joint(c, depth + 1)
        if not children[k]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {vec(offsets[k] / 2)}", f"{pad}  }}"])
        lines.append(pad + "}")

    joint(0, 0)
    return lines, order


def _motion(skeleton: Skeleton, track: Track, order: list[int], scale: float) -> list[str]:
    """One line per frame from the track's first to last appearance: root position, then the Euler angles
    of every joint in `order`."""
    rotations, pelvis = track_pose(skeleton, track)
    frames = np.arange(track.index[0], track.index[-1] + 1)
    held = np.searchsorted(track.index, frames, side="right") - 1  # the last pose at or before each frame
    rotations, pelvis = rotations[held][:, order], pelvis[held]
    rotations[:, 0] = Y_UP @ rotations[:, 0]
    values = np.concatenate([(pelvis @ Y_UP.T) * scale, euler_zxy(rotations).reshape(len(frames), -1)], 1)
    return [" ".join(f"{v:.6f}" for v in row) for row in values]


def _frame_time(times: np.ndarray, rec: Reconstruction, fps: float | None) -> float:
    if len(times) > 1:
        return float(np.median(np.diff(times)))
    return 1.0 / (fps or rec.fps or DEFAULT_FPS)


def write(
    rec: Reconstruction, dest: Path, smplx=None, units: str = "m", fps: float | None = None, body_only=False
) -> str:
    """Write dest/person_<id>.bvh for every track id (see the module docstring); → a one-line summary."""
    if units not in UNITS:
        raise ExportError(f"--units: {units!r}; expected one of {', '.join(UNITS)}")
    if not rec.humans:
        raise ExportError(f"{rec.path}: no people to export (BVH holds body motion; this reconstruction has none)")
    model = require_smplx(rec, smplx, "the BVH skeletons")
    seq = gather(rec)
    if not seq.tracks:
        raise ExportError(f"{rec.path}: no people to export (no frame has a person)")
    frame_time = _frame_time(frame_times(rec, seq, fps), rec, fps)
    joints = NUM_BODY_JOINTS if body_only else len(JOINT_NAMES)
    dest = Path(dest)
    dest.mkdir()
    for track in seq.tracks.values():
        skeleton = track_skeleton(model, track)
        hierarchy, order = _hierarchy(skeleton, joints, UNITS[units])
        motion = _motion(skeleton, track, order, UNITS[units])
        header = ["MOTION", f"Frames: {len(motion)}", f"Frame Time: {frame_time:.8f}"]
        (dest / f"person_{track.track_id}.bvh").write_text("\n".join([*hierarchy, *header, *motion]) + "\n")
    return f"BVH: {len(seq.tracks)} people (person_<id>.bvh), {joints} joints, {units}, {1 / frame_time:.3g} frames/s"
