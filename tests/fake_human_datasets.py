"""Tiny synthetic human-mesh benchmarks in the official layouts (3DPW raw release, EMDB, GVHMR's RICH files),
for the dataset readers' tests. Bodies stand ~3 m in front of the camera, so projections are sensible."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import PIL.Image
from scipy.spatial.transform import Rotation

from human3r_jax.evaluation.human_data import EMDB_SEQUENCES

RICH_SEQUENCES = ("test/Gym_013_burpee4/cam_06", "test/ParkingLot2_009_overfence1/cam_04")


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str (BINSTRING), as the 3DPW release's pickles hold them: they
    only load with encoding='latin1'."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def _rotation(rng: np.random.Generator, scale: float) -> np.ndarray:
    return Rotation.from_rotvec(rng.normal(size=3) * scale).as_matrix()


def _camera(rng: np.random.Generator) -> np.ndarray:
    """[4, 4] world→camera: a small rotation and translation."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = _rotation(rng, 0.2), rng.normal(size=3) * 0.3
    return T


def _world_trans(T_w2c: np.ndarray, p_cam: np.ndarray) -> np.ndarray:
    """[..., 3] world positions that the cameras T_w2c [..., 4, 4] see at p_cam [..., 3]."""
    R, t = T_w2c[..., :3, :3], T_w2c[..., :3, 3]
    return np.einsum("...ji,...j->...i", R, p_cam - t)


def _intrinsics(size: tuple[int, int]) -> np.ndarray:
    W, H = size
    return np.array([[1.2 * max(W, H), 0, W / 2], [0, 1.2 * max(W, H), H / 2], [0, 0, 1]])


def _write_images(paths: list[Path], size: tuple[int, int], rng: np.random.Generator) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3))).save(p, quality=80)


def write_3dpw_raw(
    root: str | Path,
    seed: int,
    sequences=("courtyard_a_00", "downtown_b_01"),
    frames: int = 3,
    size: tuple[int, int] = (108, 192),
) -> dict[str, dict]:
    """ROOT/sequenceFiles/test/<seq>.pkl (Python-2 style latin1 pickles) and ROOT/imageFiles/<seq>/image_%05d.jpg
    (W×H = size). The first sequence has a man and a woman who swap depth order at frame 1, the woman invalid at
    the last frame; the others one man, with no valid person at frame 1. Returns seq → the pickled dict."""
    root, rng = Path(root), np.random.default_rng(seed)
    out = {}
    for s, seq in enumerate(sequences):
        n = 2 if s == 0 else 1
        cam_poses = np.stack([_camera(rng) for _ in range(frames)])
        depth = np.array([[2.6, 3.4, 3.0], [3.2, 2.8, 3.4]])  # person × frame: the order swaps at frame 1
        p_cam = np.stack(
            [
                np.stack([np.full(frames, 0.4 * i - 0.2), np.full(frames, 0.1), np.resize(depth[i], frames)], -1)
                for i in range(n)
            ]
        )
        valid = np.ones((n, frames), np.int64)
        if n == 2:
            valid[1, -1] = 0
        else:
            valid[:, min(1, frames - 1)] = 0
        poses = [
            np.concatenate([rng.normal(size=(frames, 3)) * 1.0, rng.normal(size=(frames, 69)) * 0.2], 1)
            for _ in range(n)
        ]
        data = {
            "sequence": seq,
            "genders": ["m", "f"][:n],
            "betas": [rng.normal(size=16 if i == 0 else 10) for i in range(n)],
            "poses": poses,
            "trans": [_world_trans(cam_poses, p_cam[i]) for i in range(n)],
            "campose_valid": [valid[i] for i in range(n)],
            "cam_poses": cam_poses,
            "cam_intrinsics": _intrinsics(size),
            "poses2d": [rng.uniform(0, 100, size=(frames, 3, 18)) for _ in range(n)],
            "img_frame_ids": np.arange(frames),
        }
        pkl = root / "sequenceFiles" / "test" / f"{seq}.pkl"
        pkl.parent.mkdir(parents=True, exist_ok=True)
        with open(pkl, "wb") as f:
            _Py2Pickler(f, protocol=2).dump(data)
        _write_images([root / "imageFiles" / seq / f"image_{k:05d}.jpg" for k in range(frames)], size, rng)
        out[seq] = data
    return out


def write_emdb(
    root: str | Path, split: int, seed: int, frames: int = 3, size: tuple[int, int] = (96, 128), sequences=None
) -> dict[str, dict]:
    """ROOT/<P>/<seq>/<P>_<seq>_data.pkl and ROOT/<P>/<seq>/images/%05d.jpg for the split's official sequences
    (or `sequences`); good_frames_mask drops frame 1 (frames ≥ 2). Returns name → the pickled dict."""
    root, rng = Path(root), np.random.default_rng(seed)
    out = {}
    for s, name in enumerate(EMDB_SEQUENCES[split] if sequences is None else sequences):
        person, seq = name.split("/")
        extrinsics = np.stack([_camera(rng) for _ in range(frames)])
        p_cam = np.stack([rng.normal(size=frames) * 0.2, np.full(frames, 0.1), 3 + rng.normal(size=frames) * 0.2], -1)
        mask = np.ones(frames, bool)
        mask[1] = False
        data = {
            "gender": ("male", "female")[s % 2],
            "name": f"{person}_{seq}",
            "emdb1": split == 1,
            "emdb2": split == 2,
            "n_frames": frames,
            "good_frames_mask": mask,
            "camera": {"intrinsics": _intrinsics(size), "extrinsics": extrinsics, "width": size[0], "height": size[1]},
            "smpl": {
                "poses_root": rng.normal(size=(frames, 3)),
                "poses_body": rng.normal(size=(frames, 69)) * 0.2,
                "betas": rng.normal(size=10),
                "trans": _world_trans(extrinsics, p_cam),
            },
        }
        folder = root / person / seq
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{person}_{seq}_data.pkl", "wb") as f:
            pickle.dump(data, f, protocol=4)
        _write_images([folder / "images" / f"{k:05d}.jpg" for k in range(frames)], size, rng)
        out[name] = data
    return out


def write_rich(root: str | Path, seed: int, frames: int = 3, size: tuple[int, int] = (137, 100)) -> tuple[dict, dict]:
    """GVHMR's ROOT/hmr4d_support/rich_test_labels.pt and ROOT/resource/cam2params.pt (torch.save) and the
    frames ROOT/test/<scene_seq>/cam_XX/%05d_XX.jpeg: frames + 2 images per sequence, of which `frames` (a
    sorted subset) are labelled. Returns (labels, cam2params) as stored, in numpy: vid → dict, cam key → (T_w2c, K)."""
    import torch

    root, rng = Path(root), np.random.default_rng(seed)
    labels, cameras = {}, {"Gym_2": (np.eye(4), _intrinsics(size))}  # a camera no sequence uses
    for s, vid in enumerate(RICH_SEQUENCES):
        _, sname, cname = vid.split("/")
        cid = int(cname.split("_")[1])
        T, K = _camera(rng), _intrinsics(size)
        cameras[f"{sname.split('_')[0]}_{cid}"] = (T, K)
        p_cam = np.stack([rng.normal(size=frames) * 0.2, np.full(frames, 0.1), 3 + rng.normal(size=frames) * 0.2], -1)
        labels[vid] = {
            "gender": ("female", "male")[s % 2],
            "frame_id": np.sort(rng.choice(frames + 2, frames, replace=False)),
            "gt_smplx_params": {
                "global_orient": rng.normal(size=(frames, 3)),
                "body_pose": rng.normal(size=(frames, 63)) * 0.2,
                "betas": np.repeat(rng.normal(size=(1, 10)), frames, 0),
                "transl": _world_trans(T, p_cam),
            },
        }
        _write_images([root / vid / f"{k * 2:05d}_{cid:02d}.jpeg" for k in range(frames + 2)], size, rng)

    labels, cameras = _as_stored(labels), _as_stored(cameras)
    (root / "hmr4d_support").mkdir(parents=True, exist_ok=True)
    (root / "resource").mkdir(parents=True, exist_ok=True)
    torch.save(_map_arrays(labels, torch.from_numpy), root / "hmr4d_support" / "rich_test_labels.pt")
    torch.save(_map_arrays(cameras, torch.from_numpy), root / "resource" / "cam2params.pt")
    return labels, cameras


def _map_arrays(x, fn):
    """`x` (dicts and tuples of arrays) with fn applied to every array."""
    if isinstance(x, dict):
        return {k: _map_arrays(v, fn) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_map_arrays(v, fn) for v in x)
    return fn(x) if isinstance(x, np.ndarray) else x


def _as_stored(x):
    """GVHMR's dtypes: float32 values, int64 indices."""
    return _map_arrays(x, lambda a: a.astype(np.int64 if a.dtype.kind in "iu" else np.float32))
