"""A small reconstruction folder, written as `human3r-jax reconstruct` writes one, with known contents:
a smooth camera path, points consistent with depth, K and the cameras, and people who keep their track
id and shape over the frames they appear in (what random weights do not give)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from human3r_jax import export, outputs
from human3r_jax.geometry import rotvec_to_rotmat


def camera_path(n: int) -> np.ndarray:
    """[n, 4, 4] camera-to-world: a slow yaw and a forward drift."""
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = np.asarray(rotvec_to_rotmat(np.array([0.02 * i, 0.1 * i, 0.01 * i], np.float32)))
        c2w[i, :3, 3] = [0.1 * i, -0.02 * i, 0.05 * i]
    return c2w.astype(np.float32)


def write_fake_reconstruction(
    folder: Path,
    n_frames: int = 6,
    hw: tuple[int, int] = (48, 64),
    tracks: dict[int, range] | None = None,
    smplx=None,
    complete: bool = True,
    fps: float | None = 10.0,
    input_size: tuple[int, int] = (128, 96),
    seed: int = 0,
) -> dict:
    """Write the folder; → what was written: c2w [F, 4, 4], K [F, 3, 3], and per track id its frames,
    betas [10], expression [10] and per-frame rotmats [53, 3, 3] and transl [3] (camera frame).

    tracks: track id → the frames it appears in (default {3: all, 8: the second half}); smplx: an SMPL-X
    model (models.smplx) to store the world vertices and joints as `--smplx` does; complete: the
    meta.json of a finished run or of an interrupted one (and then no reconstruction.npz)."""
    from human3r_jax.models.smplx import bodies_in_camera, to_world

    rng = np.random.default_rng(seed)
    h, w = hw
    folder = Path(folder)
    (folder / "frames").mkdir(parents=True)
    outputs.mark(folder, "reconstruction")
    tracks = tracks if tracks is not None else {3: range(n_frames), 8: range(n_frames // 2, n_frames)}
    c2w = camera_path(n_frames)
    focal = 0.9 * w
    k = np.array([[focal, 0, w // 2], [0, focal, h // 2], [0, 0, 1]], np.float32)
    people = {
        tid: {
            "frames": list(frames),
            "betas": rng.normal(0, 0.5, 10).astype(np.float32),
            "expression": rng.normal(0, 0.3, 10).astype(np.float32),
            "rotmats": {},
            "transl": {},
        }
        for tid, frames in tracks.items()
    }
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    for i in range(n_frames):
        depth = (2.0 + 0.5 * np.sin(u / 7.0) + 0.3 * np.cos(v / 5.0) + 0.01 * i).astype(np.float32)
        cam = np.stack([(u - k[0, 2]) / k[0, 0] * depth, (v - k[1, 2]) / k[1, 1] * depth, depth], -1)
        world = cam @ c2w[i, :3, :3].T + c2w[i, :3, 3]
        frame = {
            "frame_index": np.int64(2 * i),
            "frame_name": np.str_(f"frame_{2 * i:06d}"),
            "time": np.float64(2 * i / fps if fps else 2 * i),
            "c2w": c2w[i],
            "intrinsics": k,
            "depth": depth,
            "conf": (1.0 + 3.0 * rng.random((h, w))).astype(np.float32),
            "pts3d_world": world.astype(np.float32),
            "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        }
        here = [tid for tid, p in people.items() if i in p["frames"]]
        rot = np.zeros((len(here), 53, 3, 3), np.float32)
        transl = np.zeros((len(here), 3), np.float32)
        for n, tid in enumerate(here):
            rotvecs = rng.normal(0, 0.2, (53, 3)).astype(np.float32)
            rotvecs[0] = [np.pi, 0.1 * i, 0]  # upright in OpenCV axes (y down), turning slowly
            rot[n] = np.asarray(rotvec_to_rotmat(rotvecs))
            transl[n] = [0.3 * n - 0.2, -0.5, 3.0 + 0.02 * i]
            people[tid]["rotmats"][i], people[tid]["transl"][i] = rot[n], transl[n]
        frame.update(
            smpl_id=np.asarray(here, np.int32),
            smpl_score=np.linspace(0.9, 0.5, len(here)).astype(np.float32),
            smpl_rotmat=rot,
            smpl_shape=np.stack([people[t]["betas"] for t in here]) if here else np.zeros((0, 10), np.float32),
            smpl_expression=np.stack([people[t]["expression"] for t in here])
            if here
            else np.zeros((0, 10), np.float32),
            smpl_transl=transl,
            n_detected=np.int64(len(here)),
        )
        if smplx is not None:
            if here:
                body = to_world(
                    bodies_in_camera(smplx, frame["smpl_shape"], frame["smpl_expression"], rot, transl), c2w[i]
                )
                frame["smpl_verts_world"] = np.asarray(body.vertices, np.float32)
                frame["smpl_joints_world"] = np.asarray(body.joints, np.float32)
            else:
                frame["smpl_verts_world"] = np.zeros((0, 10475, 3), np.float32)
                frame["smpl_joints_world"] = np.zeros((0, 127, 3), np.float32)
        export.save_npz(folder / "frames" / f"{i:06d}.npz", frame)
    if smplx is not None:
        np.save(folder / "smplx_faces.npy", np.asarray(smplx.faces))
    meta = {
        "schema_version": export.SCHEMA_VERSION,
        "complete": complete,
        "state": "complete" if complete else "stopped",
        "frames": n_frames,
        "input": "fake.mp4",
        "input_kind": "video",
        "input_fps": fps,
        "input_size": list(input_size),
        "settings": {"size": 512},
        "smplx": smplx is not None,
        "files": {},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return {"c2w": c2w, "K": np.tile(k, (n_frames, 1, 1)), "people": people}
