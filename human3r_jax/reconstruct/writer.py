"""Writing one sequence as it runs: `SequenceWriter` stores each frame's file as the frame completes
(the per-frame schema `export.FRAME_KEYS`) and, at `close`, the whole-sequence exports (reconstruction.npz,
`export.SUMMARY_KEYS`, gathered back from the frame files; trajectory.tum; scene.glb) and meta.json last.

Given camera poses (--camera-poses) need the whole predicted trajectory: at `close`, before the
whole-sequence files, every frame file is moved onto its given pose and scaled by the Sim(3) fitted from the
predicted to the given camera centres (`cameras.align_trajectory`, `cameras.move_frame`), one file at a time.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from human3r_jax import cameras, export, outputs
from human3r_jax import checkpoint as ckpt
from human3r_jax.data.video import FrameSource
from human3r_jax.reconstruct.settings import LoadedModel, Settings

# What every frame file holds; the people's fields (export.PERSON_FIELDS) follow for Human3R models.
_SCENE_KEYS = ("c2w", "intrinsics", "depth", "conf", "pts3d_world")


class SequenceWriter:
    """Writes one sequence's per-frame files and, at `close`, its whole-sequence exports."""

    def __init__(
        self,
        out_dir: Path,
        model: LoadedModel,
        settings: Settings,
        source: FrameSource,
        smplx,
        poses=None,
        on_saved=None,
    ):
        """poses: the given camera-to-world [4, 4] of each frame by frame index (`cameras.load_poses`), or None;
        on_saved(n, frame): called with each frame as its file holds it, once written."""
        self.on_saved = on_saved
        self.out, self.model, self.settings, self.source, self.smplx = Path(out_dir), model, settings, source, smplx
        self.poses, self.alignment = poses, None
        (self.out / "frames").mkdir(parents=True, exist_ok=True)
        outputs.mark(self.out, "reconstruction")
        self.names, self.times, self.indices, self.c2w, self.k = [], [], [], [], []
        self.points = np.zeros((0, 3), np.float32)
        self.colours = np.zeros((0, 3), np.uint8)
        self.bodies = None  # (frame number, verts [n, V, 3], ids [n]) for scene.glb
        self.hw = None
        self.input_size = None  # (W, H) of the raw frames
        # meta.json from the start: a folder never looks complete (complete=true) before it is
        export.save_json(self.out / "meta.json", self._meta(False, None, {}, "running"))

    def add(self, raw, img: np.ndarray, res: dict) -> None:
        """One frame's results (numpy, batch axis removed): img [H, W, 3] the model input in [-1, 1]; res the
        scene keys c2w [4, 4], intrinsics [3, 3], depth and conf [H, W], pts3d_world [H, W, 3] and, for Human3R,
        smpl_valid [S], the PERSON_FIELDS [S, …], n_detected [] and (with SMPL-X) smpl_verts_world [S, V, 3] and
        smpl_joints_world [S, 127, 3]."""
        n = len(self.names)
        self.hw = img.shape[:2]
        if self.input_size is None and getattr(raw, "image", None) is not None:
            self.input_size = tuple(raw.image.size)
            export.save_json(self.out / "meta.json", self._meta(False, None, {}, "running"))
        frame = {"frame_index": np.int64(raw.index), "frame_name": np.str_(raw.name), "time": np.float64(raw.time)}
        frame.update({k: res[k] for k in _SCENE_KEYS})
        frame["image"] = ((img * 0.5 + 0.5) * 255).round().clip(0, 255).astype(np.uint8)
        if self.model.humans:
            valid = res["smpl_valid"]
            for k in export.PERSON_FIELDS:
                frame[k] = res[k][valid]
            frame["n_detected"] = res["n_detected"]
            if "smpl_verts_world" in res:
                frame["smpl_verts_world"] = res["smpl_verts_world"][valid]
                frame["smpl_joints_world"] = res["smpl_joints_world"][valid]
                want = self.settings.glb_frame
                if (want is None and valid.any()) or want == n:
                    self.bodies = (n, frame["smpl_verts_world"], frame["smpl_id"])
        export.save_npz(self.out / "frames" / f"{n:06d}.npz", frame)
        self.names.append(raw.name)
        self.times.append(raw.time)
        self.indices.append(raw.index)
        self.c2w.append(res["c2w"])
        self.k.append(res["intrinsics"])
        self._keep_points(res["pts3d_world"], res["conf"], frame["image"])
        if self.on_saved is not None:  # last: the frame is counted even if the hook is interrupted
            self.on_saved(n, frame)

    def _apply_poses(self) -> None:
        """Every frame file moved onto its given pose, the scene scaled by the fitted Sim(3)'s scale; the
        in-memory copies (cameras, kept points, scene.glb's bodies) rebuilt from the rewritten files."""
        given = np.stack([self.poses[i] for i in self.indices])
        self.alignment = cameras.align_trajectory(np.asarray(self.c2w)[:, :3, 3], given[:, :3, 3])
        scale = self.alignment["scale"]
        self.points, self.colours = self.points[:0], self.colours[:0]
        for n, (predicted, pose) in enumerate(zip(self.c2w, given)):
            path = self.out / "frames" / f"{n:06d}.npz"
            with np.load(path) as z:
                frame = cameras.move_frame(dict(z), predicted, pose, scale)
            export.save_npz(path, frame)
            self._keep_points(frame["pts3d_world"], frame["conf"], frame["image"])
            if self.bodies is not None and self.bodies[0] == n:
                self.bodies = (n, frame["smpl_verts_world"], frame["smpl_id"])
        self.c2w = list(given.astype(np.float32))
        a = self.alignment
        print(
            f"{self.out}: camera poses from {self.settings.camera_poses} ({a['frames']} frames): scale "
            + (f"{a['scale']:.6g}" if a["scale_fitted"] else "1 (not fitted: the cameras do not move)")
            + f", ATE {a['ate_before']:.4g} before and {a['ate_after']:.4g} after the Sim(3) alignment",
            file=sys.stderr,
        )

    def _keep_points(self, pts, conf, rgb):
        keep = conf > self.settings.conf_threshold
        p, c = pts[keep], rgb[keep]
        if len(p) > self.settings.points_per_frame:
            sel = np.linspace(0, len(p) - 1, self.settings.points_per_frame).astype(int)
            p, c = p[sel], c[sel]
        self.points = np.concatenate([self.points, p.astype(np.float32)])
        self.colours = np.concatenate([self.colours, c])
        if len(self.points) > self.settings.max_points:  # bounded: thin the whole cloud by half
            self.points, self.colours = self.points[::2], self.colours[::2]

    def close(self, complete: bool, error: str | None, timing: dict) -> None:
        """The frames moved onto the given poses (also for an interrupted run: the frames it has), the
        whole-sequence files, then meta.json last (an interruption in between leaves the meta.json that
        says the folder is incomplete)."""
        f = len(self.names)
        if self.poses is not None and f:
            self._apply_poses()
        summary = {
            "frame_index": np.asarray(self.indices, np.int64),
            "frame_name": np.asarray(self.names, str),
            "time": np.asarray(self.times, np.float64),
            "c2w": np.asarray(self.c2w, np.float32).reshape(f, 4, 4),
            "intrinsics": np.asarray(self.k, np.float32).reshape(f, 3, 3),
            "image_size": np.asarray(self.hw or (0, 0), np.int64),
        }
        if self.model.humans:
            summary.update(self._human_summary(f))
        export.save_npz(self.out / "reconstruction.npz", summary)
        if self.smplx is not None:
            np.save(self.out / "smplx_faces.npy", np.asarray(self.smplx.faces))
        if f:
            export.save_tum(self.out / "trajectory.tum", summary["time"], summary["c2w"])
            meshes = []
            if self.bodies is not None:
                _, verts, ids = self.bodies
                meshes = [(v, np.asarray(self.smplx.faces), export.track_colour(i)) for v, i in zip(verts, ids)]
            cams = [(c, k, self.hw) for c, k in zip(summary["c2w"], summary["intrinsics"])]
            export.save_glb(self.out / "scene.glb", self.points, self.colours, cams, meshes)
        export.save_json(
            self.out / "meta.json", self._meta(complete, error, timing, "complete" if complete else "stopped")
        )

    def _meta(self, complete: bool, error: str | None, timing: dict, state: str) -> dict:
        return {
            "schema_version": export.SCHEMA_VERSION,
            "complete": complete,
            "state": state,
            "error": error,
            "frames": len(self.names),
            "input": self.source.name,  # the path, or a stream's URL without its password
            "input_kind": self.source.kind,
            "input_fps": self.source.fps,
            "input_size": self.input_size,
            "settings": self._settings_json(),
            "cameras": self._cameras_meta(),
            "model": self.model.source,
            "model_config": ckpt.config_to_json(self.model.cfg),
            "compute_dtype": self.model.dtype,  # the files are float32 whatever the model computed in
            "random_weights": self.model.random_weights,
            "note": "RANDOM WEIGHTS: the output is meaningless" if self.model.random_weights else None,
            "smplx": self.smplx is not None,
            "glb_bodies_frame": None if self.bodies is None else self.bodies[0],
            "timing": timing,
            "files": {"frames": export.FRAME_KEYS, "reconstruction.npz": export.SUMMARY_KEYS},
        }

    def _settings_json(self) -> dict:
        settings = dataclasses.asdict(self.settings)
        k = settings["intrinsics"]
        if k is not None and not isinstance(k, str):  # a Path as text, an array as nested lists
            settings["intrinsics"] = str(k) if isinstance(k, Path) else np.asarray(k).tolist()
        return settings

    def _cameras_meta(self) -> dict:
        """What was given: "intrinsics" given/estimated, "poses" given/static/estimated, the world frame, and
        with given poses the alignment (`cameras.align_trajectory`, None until the run ends)."""
        s = self.settings
        poses = "given" if s.camera_poses is not None else "static" if s.static_camera else "estimated"
        meta = {
            "intrinsics": "estimated" if s.intrinsics is None else "given",
            "poses": poses,
            "world": "the given poses' frame" if poses == "given" else "the first camera's frame",
        }
        if s.camera_poses is not None:
            meta.update(camera_poses=str(s.camera_poses), alignment=self.alignment)
        return meta

    def _human_summary(self, f: int) -> dict:
        """[F, S, …] arrays gathered back from the per-frame files (nothing kept in memory meanwhile)."""
        s = self.model.cfg.max_humans
        out = {
            "smpl_valid": np.zeros((f, s), bool),
            **{k: np.full((f, s, *p.shape), p.empty, p.dtype) for k, p in export.PERSON_FIELDS.items()},
            "smpl_transl_world": np.zeros((f, s, 3), np.float32),
            "n_detected": np.zeros(f, np.int64),
        }
        for i in range(f):
            with np.load(self.out / "frames" / f"{i:06d}.npz") as z:
                n = len(z["smpl_id"])
                out["smpl_valid"][i, :n] = True
                for k in export.PERSON_FIELDS:
                    out[k][i, :n] = z[k]
                out["n_detected"][i] = z["n_detected"]
                c2w = z["c2w"]
                out["smpl_transl_world"][i, :n] = z["smpl_transl"] @ c2w[:3, :3].T + c2w[:3, 3]
        return out
