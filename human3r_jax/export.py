"""Writing a reconstruction: per-frame files as frames complete, whole-sequence exports at the end.

OUT_DIR/
  frames/000000.npz        one per processed frame (schema FRAME_KEYS)
  reconstruction.npz       the whole sequence in one file (schema SUMMARY_KEYS): np.load(path)
  smplx_faces.npy          [20908, 3] faces of the SMPL-X meshes (with --smplx)
  trajectory.tum           camera trajectory, TUM format: time tx ty tz qx qy qz qw (camera-to-world)
  scene.glb                confident point cloud, camera frustums, SMPL-X meshes of one frame
  meta.json                settings, model, timing, and whether the run completed

Every file is written under a temporary name and renamed, so a file that exists is complete;
`meta.json:complete` says whether all frames were processed. The per-person fields (track id, score,
SMPL-X parameters) are defined once, with their shapes and dtypes, in PERSON_FIELDS; both schemas and
`human3r_jax.reconstruct` take them from there.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from human3r_jax.geometry import matrix_to_quat

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PersonField:
    """One per-person output of Human3R: the step gives it per slot ([B, S, *shape]), a per-frame file keeps
    the valid people's ([n, *shape], in the step's dtype: int32 ids) and reconstruction.npz every slot's
    ([F, S, *shape] `dtype`, `empty` in empty slots)."""

    dtype: type
    shape: tuple[int, ...]  # one person's
    about: str  # its description in FRAME_KEYS
    summary: str = ""  # what SUMMARY_KEYS adds to the shape, if anything
    empty: int = 0


# The per-person fields, in file order (smpl_valid, the slot mask, and n_detected, a frame's count, are not).
PERSON_FIELDS = {
    "smpl_id": PersonField(np.int64, (), "track id of each person", "(−1 empty)", empty=-1),
    "smpl_score": PersonField(np.float32, (), "detection score"),
    "smpl_rotmat": PersonField(
        np.float32,
        (53, 3, 3),
        "rotations: 0 global (camera frame), 1–21 body, 22–36 left hand, 37–51 right hand, 52 jaw",
    ),
    "smpl_shape": PersonField(np.float32, (10,), "SMPL-X betas"),
    "smpl_expression": PersonField(np.float32, (10,), "SMPL-X expression"),
    "smpl_transl": PersonField(
        np.float32, (3,), "head joint (SMPL-X joint 15) in the camera frame", "head joint, camera frame"
    ),
}


def _dims(lead: tuple[str, ...], shape: tuple[int, ...]) -> str:
    """("F", "S"), (53, 3, 3) → "[F, S, 53, 3, 3]"."""
    return "[" + ", ".join([*lead, *map(str, shape)]) + "]"


# Per-frame file. H, W: model resolution; S: human slots; only valid humans are stored (n of them).
FRAME_KEYS = {
    "frame_index": "[] frame number in the input (before --subsample)",
    "frame_name": "[] file name, or frame_NNNNNN for videos",
    "time": "[] seconds (videos) or frame number (images)",
    "c2w": "[4, 4] camera-to-world (OpenCV axes: x right, y down, z forward), segments chained; the given "
    "--camera-poses, or the identity with --static-camera",
    "intrinsics": "[3, 3] K at the model resolution (the given --intrinsics mapped to the model input, or the "
    "focal from the point map with principal point W//2, H//2)",
    "depth": "[H, W] z of the points in the camera frame (model units: metres for the released models)",
    "conf": "[H, W] confidence of the points (1 + exp(x) ≥ 1)",
    "pts3d_world": "[H, W, 3] points in the world frame",
    "image": "[H, W, 3] uint8 the model's input image (the points' colours)",
    **{k: f"{_dims(('n',), f.shape)} {f.about}" for k, f in PERSON_FIELDS.items()},
    "smpl_verts_world": "[n, 10475, 3] SMPL-X vertices in the world frame (only with --smplx)",
    "smpl_joints_world": "[n, 127, 3] SMPL-X joints in the world frame (only with --smplx; 0–54 the skeleton)",
    "n_detected": "[] detections before the slot limit (n < n_detected: the lowest scores were dropped)",
}
SUMMARY_KEYS = {
    "frame_index": "[F] frame number in the input (before --subsample)",
    "frame_name": "[F] file name, or frame_NNNNNN for videos",
    "time": "[F] seconds (videos) or frame number (images)",
    "c2w": "[F, 4, 4]",
    "intrinsics": "[F, 3, 3]",
    "image_size": "[2] model resolution (H, W)",
    "smpl_valid": "[F, S] slot holds a person",
    **{k: " ".join(filter(None, (_dims(("F", "S"), f.shape), f.summary))) for k, f in PERSON_FIELDS.items()},
    "smpl_transl_world": "[F, S, 3] head joint, world frame",
    "n_detected": "[F] detections before the slot limit (> S: the lowest scores were dropped)",
}


def atomic_write(path: Path, write) -> None:
    """write(tmp_path) then rename to `path`: readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(path: Path, arrays: dict) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def save_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, default=str)))


def save_tum(path: Path, times: np.ndarray, c2w: np.ndarray) -> None:
    q = np.asarray(matrix_to_quat(np.asarray(c2w[:, :3, :3], np.float32)))[:, [1, 2, 3, 0]]  # (x, y, z, w)
    lines = ["# time tx ty tz qx qy qz qw (camera-to-world, OpenCV camera axes)"]
    lines += [" ".join(f"{v:.9g}" for v in (t, *c[:3, 3], *qq)) for t, c, qq in zip(times, c2w, q)]
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


def load_tum(path: Path) -> np.ndarray:
    return np.loadtxt(path, comments="#", ndmin=2)


TRACK_COLOURS = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
    ],
    np.uint8,
)


def track_colour(track_id: int) -> np.ndarray:
    return TRACK_COLOURS[int(track_id) % len(TRACK_COLOURS)]


def drawing_focal(k: np.ndarray, h: int, w: int) -> float:
    """The focal to draw a camera with: the estimate, or the 60° one where the estimate sits at its
    clip (0), as it can for a random or untrained model."""
    f = float(k[0, 0])
    return f if np.isfinite(f) and f > 0 else max(h, w) / (2 * np.tan(np.pi / 6))


def frustum(c2w: np.ndarray, k: np.ndarray, hw: tuple[int, int], scale: float):
    """A camera pyramid as line segments [8, 2, 3] in the world frame."""
    h, w = hw
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    rays = np.concatenate([(corners - k[:2, 2]) / drawing_focal(k, h, w), np.ones((4, 1))], 1) * scale
    pts = rays @ c2w[:3, :3].T + c2w[:3, 3]
    o = c2w[:3, 3]
    return np.array([[o, p] for p in pts] + [[pts[i], pts[(i + 1) % 4]] for i in range(4)])


def save_glb(path: Path, points: np.ndarray, colours: np.ndarray, cameras: list, meshes: list) -> None:
    """points [P, 3] + colours [P, 3] uint8; cameras: (c2w, K, (H, W)); meshes: (verts, faces, rgb)."""
    import trimesh

    scene = trimesh.Scene()
    if len(points):
        scene.add_geometry(trimesh.PointCloud(points, colors=colours), geom_name="points")
    if cameras:
        extent = np.ptp(np.stack([c[0][:3, 3] for c in cameras]), axis=0).max() if len(cameras) > 1 else 0.0
        scale = max(extent * 0.05, 0.05)
        segs = np.concatenate([frustum(c2w, k, hw, scale) for c2w, k, hw in cameras])
        scene.add_geometry(trimesh.load_path(segs), geom_name="cameras")
    for i, (verts, faces, rgb) in enumerate(meshes):
        mesh = trimesh.Trimesh(verts, faces, process=False)
        mesh.visual.vertex_colors = np.tile(np.append(rgb, 255).astype(np.uint8), (len(verts), 1))
        scene.add_geometry(mesh, geom_name=f"person_{i}")
    atomic_write(path, lambda tmp: scene.export(file_obj=str(tmp), file_type="glb"))
