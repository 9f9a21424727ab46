"""A tiny synthetic dataset in the preprocessed BEDLAM layout, for tests.

Layout written under `root`: the preprocessed layout of `data/schema.py`, as `bedlam_preprocess` writes it
(the SMPL-X labels are .npz files of stacked arrays, not the official pickled lists of dicts):

    <root>/{Training,Test}/<scene>_<seq>/
        rgb/<frame>.png     uint8 RGB [H, W, 3]
        depth/<frame>.npy   float32 [H, W], z-depth in metres; 0 or > 200 m = invalid
        mask/<frame>.png    uint8 [H, W], 255 where a human is, else 0
        cam/<frame>.npz     schema.CAMERA_SPEC: intrinsics float32 [3, 3]; pose float32 [4, 4] camera-to-world
        smpl/<frame>.npz    schema.label_spec(P): P people (P may be 0), float32 [P, *shape] per key

Frames are named 000000, 000001, ...; every folder of a sequence holds the same names.

The scene. World and cameras use OpenCV axes (x right, y down, z forward); the world's are those
of an unrotated camera. The world holds an infinite floor y = FLOOR_Y, a back wall z = WALL_Z that
rises to y = WALL_TOP, and sky above it. Each sequence has one camera moving smoothly (translation,
yaw, pitch and roll linear in the frame index) with intrinsics f = 0.8·W, c = (W/2, H/2); pixel
(u, v) (integer = pixel centre) looks along K⁻¹ [u, v, 1], as dust3r unprojects depth maps.
0–`max_people` SMPL-X bodies (neutral, 11 betas in [-1, 1], small random body, hand and jaw
poses, flat hand mean) stand on the floor at different depths, facing roughly towards the camera,
static in the world.

What is exact. The scene depth of a pixel is the nearest ray–plane intersection (floor, or wall
below its top), so it is known analytically; sky pixels get SKY_DEPTH (> 200 m: invalid) and a few
random pixels 0 (invalid, as sensor dropout). The SMPL-X labels of frame t are the world bodies
expressed in camera t: with R, t the world-to-camera rotation and translation and J0 the pelvis of
the rest body (it depends on the betas only; SMPL-X rotates the body about it),

    root_cam = R · root_world,        transl_cam = R (J0 + transl_world) + t − J0,

so `smplx.SMPLX(global_orient=root_cam, transl=transl_cam, ...)` gives the world body seen from
camera t. Humans are rendered approximately: every vertex is splatted as a 3×3-pixel square at its
own camera depth, z-buffered against the scene. A person is labelled in a frame iff at least one of
its pixels is visible, so labels and masks agree.

Determinism: files are byte-identical for the same arguments (the .npz entries carry no
timestamps). The first sequence has `max_people` people and the second none, so a dataset of at
least two sequences with `max_people` ≥ 2 has frames with 0 and with ≥ 2 people.

    python -m human3r_jax.data.synthetic --out DIR --smplx BODY_MODELS_DIR
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import jax
import numpy as np
import PIL.Image

from human3r_jax.data.schema import NUM_BETAS, POSE_KEYS, SMPL_KEYS, SUBFOLDERS
from human3r_jax.models import smplx as S

FLOOR_Y = 1.5  # the floor plane y = FLOOR_Y (1.5 m below the world origin)
WALL_Z = 9.0  # the back wall z = WALL_Z ...
WALL_TOP = -2.5  # ... up to y = WALL_TOP (4 m above the floor); sky above
SKY_DEPTH = 1000.0  # stored for sky pixels: a renderer's far value, invalid by the > 200 m rule
DROPOUT = 0.003  # fraction of pixels whose depth is set to 0 (invalid)
FOCAL_FRACTION = 0.8  # f = 0.8·W
SPLIT_NAMES = ("Training", "Test")
SPLAT_RADIUS = 1  # vertices are splatted as (2r+1)² pixel squares

_PALETTE = np.array([(220, 60, 60), (60, 180, 75), (70, 110, 230), (240, 180, 40), (170, 80, 200)], np.uint8)
_forward = jax.jit(S.smplx_forward)  # one compile: every call has batch 1
_POSE_FILE_KEYS = tuple(SMPL_KEYS[k][0] for k in POSE_KEYS)  # SMPL-X joint order, root first


def _rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3] (Rodrigues, float64)."""
    v = np.asarray(v, np.float64)
    angle = np.linalg.norm(v, axis=-1)[..., None, None]
    axis = v / np.maximum(angle[..., 0], 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(v.shape[:-1] + (3, 3))
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3], angle in [0, π] (float64), through the
    unit quaternion taken from its largest component (Shepperd), so it is stable at every angle."""
    r = np.asarray(r, np.float64)
    trace = np.trace(r, axis1=-2, axis2=-1)

    def d(i, j):
        return r[..., i, j]

    q = np.stack(
        [  # [..., 4 candidates, (w, x, y, z)], each ∝ the quaternion
            np.stack([1 + trace, d(2, 1) - d(1, 2), d(0, 2) - d(2, 0), d(1, 0) - d(0, 1)], -1),
            np.stack([d(2, 1) - d(1, 2), 1 + 2 * d(0, 0) - trace, d(0, 1) + d(1, 0), d(0, 2) + d(2, 0)], -1),
            np.stack([d(0, 2) - d(2, 0), d(0, 1) + d(1, 0), 1 + 2 * d(1, 1) - trace, d(1, 2) + d(2, 1)], -1),
            np.stack([d(1, 0) - d(0, 1), d(0, 2) + d(2, 0), d(1, 2) + d(2, 1), 1 + 2 * d(2, 2) - trace], -1),
        ],
        -2,
    )
    best = np.argmax(np.stack([trace, d(0, 0), d(1, 1), d(2, 2)], -1), -1)
    q = np.take_along_axis(q, best[..., None, None], -2)[..., 0, :]
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0) / np.linalg.norm(q, axis=-1, keepdims=True)
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(sin_half, q[..., :1])
    return q[..., 1:] * np.where(sin_half > 1e-12, angle / np.maximum(sin_half, 1e-300), 2.0)


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    """[3, 3] rotation by `angle` radians about coordinate axis 0 (x), 1 (y) or 2 (z)."""
    v = np.zeros(3)
    v[axis] = angle
    return _rotvec_to_matrix(v)


def intrinsics(width: int, height: int) -> np.ndarray:
    """[3, 3] float32 K shared by every frame: f = 0.8·W, principal point at the image centre."""
    f = FOCAL_FRACTION * width
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)


def scene_depth(K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Analytic z-depth of the static scene: K [3, 3], c2w [4, 4] -> (depth [H, W] float64 with inf
    for sky, world points [H, W, 3] of the hits)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K.astype(np.float64)).T  # z = 1
    d = rays @ c2w[:3, :3].T
    o = c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        # z = 1 in camera space, so the ray parameter of a hit is its z-depth
        t_floor = np.where(d[..., 1] > 0, (FLOOR_Y - o[1]) / d[..., 1], np.inf)
        t_wall = np.where(d[..., 2] > 0, (WALL_Z - o[2]) / d[..., 2], np.inf)
    t_wall = np.where(o[1] + t_wall * d[..., 1] >= WALL_TOP, t_wall, np.inf)
    depth = np.minimum(t_floor, t_wall)
    points = o + np.where(np.isfinite(depth), depth, 0.0)[..., None] * d
    return depth, points


def _scene_colours(depth: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8: a checker floor, a banded gradient wall and a gradient sky, all textured in
    world coordinates so that a surface keeps its colour across frames."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    on_floor = np.isfinite(depth) & np.isclose(y, FLOOR_Y, atol=1e-6)
    checker = ((np.floor(x / 0.5) + np.floor(z / 0.5)) % 2)[..., None]
    floor = np.where(checker > 0, [150, 120, 90], [80, 65, 50])
    height = np.clip((FLOOR_Y - y) / (FLOOR_Y - WALL_TOP), 0, 1)[..., None]
    stripe = (np.floor(x) % 2)[..., None]
    wall = (1 - height) * np.array([170, 150, 130]) + height * np.array([230, 225, 215]) - 25 * stripe
    row = np.linspace(0, 1, depth.shape[0])[:, None, None]
    sky = (1 - row) * np.array([90, 150, 230]) + row * np.array([180, 215, 245])
    rgb = np.where(np.isfinite(depth)[..., None], np.where(on_floor[..., None], floor, wall), sky)
    return np.round(rgb).astype(np.uint8)


def _splat(verts_cam: list[np.ndarray], K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Z-buffer of each person's splatted vertices: verts_cam P × [N, 3] camera-frame vertices ->
    [P, H, W] nearest depth per pixel (inf where the person does not reach)."""
    zbuf = np.full((len(verts_cam), height * width), np.inf)
    r = SPLAT_RADIUS
    offsets = [(du, dv) for du in range(-r, r + 1) for dv in range(-r, r + 1)]
    for p, x in enumerate(verts_cam):
        x = x[x[:, 2] > 1e-3]  # behind the camera: not visible
        uv = np.round(x[:, :2] / x[:, 2:] * np.diag(K)[:2] + K[:2, 2]).astype(np.int64)
        for du, dv in offsets:
            u, v = uv[:, 0] + du, uv[:, 1] + dv
            inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
            np.minimum.at(zbuf[p], v[inside] * width + u[inside], x[inside, 2])
    return zbuf.reshape(len(verts_cam), height, width)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez with fixed entry timestamps (np.savez stamps the current time into the zip)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _camera_path(rng: np.random.Generator, frames: int) -> np.ndarray:
    """[T, 4, 4] float64 camera-to-world poses, translation and Euler angles linear in time."""
    c0 = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.1), rng.uniform(-1.0, 0.0)])
    dc = np.array([rng.uniform(-0.06, 0.06), rng.uniform(-0.01, 0.01), rng.uniform(-0.02, 0.08)])
    yaw, pitch, roll = rng.uniform(-0.15, 0.15), rng.uniform(-0.12, 0.04), rng.uniform(-0.03, 0.03)
    dyaw, dpitch, droll = rng.uniform(-0.03, 0.03), rng.uniform(-0.01, 0.01), rng.uniform(-0.005, 0.005)
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for t in range(frames):
        # pitch > 0 looks up (y is down)
        poses[t, :3, :3] = (
            _axis_rotation(1, yaw + dyaw * t)
            @ _axis_rotation(0, pitch + dpitch * t)
            @ _axis_rotation(2, roll + droll * t)
        )
        poses[t, :3, 3] = c0 + dc * t
    return poses


def _people(
    rng: np.random.Generator, model: S.SmplxModel, n: int, mid_c2w: np.ndarray, K: np.ndarray, width: int
) -> list[dict]:
    """n world-static people standing on the floor, in depth bins of [2.5, 6.5] m in front of the
    middle camera. Each: float32 pose arrays as stored, `root_world` [3, 3], `transl_world` [3],
    `pelvis` J0 [3] and world `vertices` [10475, 3] (float64)."""
    shape = dict(SMPL_KEYS.values())  # file key → shape of one person
    edges = np.linspace(2.5, 6.5, n + 1)
    people = []
    for i in range(n):
        bin_width = edges[i + 1] - edges[i]
        depth = rng.uniform(edges[i] + 0.15 * bin_width, edges[i + 1] - 0.15 * bin_width)
        lateral = rng.uniform(-1, 1) * 0.55 * depth * (width / 2) / K[0, 0]
        spot = mid_c2w[:3, :3] @ np.array([lateral, 0.0, depth]) + mid_c2w[:3, 3]
        # SMPL-X is y-up facing +z; turning it by π about x stands it up in the y-down world,
        # facing -z (towards the cameras), then a random turn about the vertical
        root_world = _axis_rotation(1, rng.uniform(-1, 1)) @ _axis_rotation(0, np.pi)
        p = {
            "smplx_body_pose": rng.normal(0, 0.12, shape["smplx_body_pose"]),
            "smplx_jaw_pose": rng.normal(0, 0.05, shape["smplx_jaw_pose"]),
            "smplx_leye_pose": np.zeros(shape["smplx_leye_pose"]),
            "smplx_reye_pose": np.zeros(shape["smplx_reye_pose"]),
            "smplx_left_hand_pose": rng.normal(0, 0.1, shape["smplx_left_hand_pose"]),
            "smplx_right_hand_pose": rng.normal(0, 0.1, shape["smplx_right_hand_pose"]),
            "smplx_shape": rng.uniform(-1, 1, shape["smplx_shape"]),
        }
        p = {k: v.astype(np.float32) for k, v in p.items()}
        # rotations from the stored float32 values, so that the labels reproduce the render
        local = _rotvec_to_matrix(np.concatenate([p[key].reshape(-1, 3) for key in _POSE_FILE_KEYS[1:]]))
        rotmats = np.concatenate([root_world[None], local])[None].astype(np.float32)  # [1, 55, 3, 3]
        out = _forward(model, p["smplx_shape"][None], np.zeros((1, model.num_expression), np.float32), rotmats)
        verts = np.asarray(out.vertices[0], np.float64)
        # feet on the floor: the lowest vertex (largest y) touches y = FLOOR_Y
        transl_world = np.array([spot[0], FLOOR_Y - verts[:, 1].max(), spot[2]])
        people.append(
            dict(
                p,
                root_world=root_world,
                transl_world=transl_world,
                pelvis=np.asarray(out.joints[0, 0], np.float64),
                vertices=verts + transl_world,
            )
        )
    return people


def _labels(people: list[dict], w2c: np.ndarray) -> dict[str, np.ndarray]:
    """Stacked camera-frame SMPL-X labels of `people` (possibly none) for world-to-camera w2c [4, 4]."""
    R, t = w2c[:3, :3], w2c[:3, 3]
    root = np.stack([R @ p["root_world"] for p in people]) if people else np.zeros((0, 3, 3))
    labels = {"smplx_root_pose": _matrix_to_rotvec(root).reshape(-1, 3)}
    for key, shape in SMPL_KEYS.values():  # the body's own parameters, as drawn by _people
        if key not in ("smplx_root_pose", "smplx_transl"):
            labels[key] = np.stack([p[key] for p in people]) if people else np.zeros((0,) + shape)
    labels["smplx_transl"] = np.array(
        [R @ (p["pelvis"] + p["transl_world"]) + t - p["pelvis"] for p in people]
    ).reshape(-1, 3)
    return {k: v.astype(np.float32) for k, v in labels.items()}


def _write_sequence(
    seq_dir: Path, rng: np.random.Generator, model: S.SmplxModel, n_people: int, frames: int, width: int, height: int
) -> list[list[int]]:
    """Render and write one sequence; returns the ids of the people visible in each frame."""
    K = intrinsics(width, height)
    poses = _camera_path(rng, frames)
    people = _people(rng, model, n_people, poses[frames // 2], K, width)
    for sub in SUBFOLDERS:
        (seq_dir / sub).mkdir(parents=True, exist_ok=True)
    visible_ids = []
    for t in range(frames):
        c2w = poses[t]
        w2c = np.linalg.inv(c2w)
        depth, points = scene_depth(K, c2w, width, height)
        rgb = _scene_colours(depth, points)
        zbuf = _splat([p["vertices"] @ w2c[:3, :3].T + w2c[:3, 3] for p in people], K, width, height)
        nearest = zbuf.min(0, initial=np.inf)
        human = nearest < depth  # sky is inf: people in front of it are always seen
        owner = zbuf.argmin(0) if people else np.zeros((height, width), np.int64)
        ids = [i for i in range(n_people) if np.any(human & (owner == i))]
        rgb[human] = _PALETTE[owner[human] % len(_PALETTE)]
        depth = np.where(human, nearest, np.where(np.isfinite(depth), depth, SKY_DEPTH))
        depth[rng.random(depth.shape) < DROPOUT] = 0.0

        name = f"{t:06d}"
        PIL.Image.fromarray(rgb).save(seq_dir / "rgb" / f"{name}.png")
        np.save(seq_dir / "depth" / f"{name}.npy", depth.astype(np.float32))
        PIL.Image.fromarray(np.where(human, 255, 0).astype(np.uint8)).save(seq_dir / "mask" / f"{name}.png")
        _save_npz(seq_dir / "cam" / f"{name}.npz", {"intrinsics": K, "pose": c2w.astype(np.float32)})
        _save_npz(seq_dir / "smpl" / f"{name}.npz", _labels([people[i] for i in ids], w2c))
        visible_ids.append(ids)
    return visible_ids


def make_synthetic_bedlam(
    root: str | Path,
    smplx_path: str | Path,
    *,
    n_train: int = 3,
    n_test: int = 1,
    frames: int = 8,
    size: tuple[int, int] = (96, 64),
    max_people: int = 3,
    seed: int = 0,
) -> dict:
    """Write `n_train` + `n_test` sequences of `frames` frames at size (W, H) under `root`.

    smplx_path: SMPLX_NEUTRAL.npz or a folder holding smplx/SMPLX_NEUTRAL.npz (as `load_smplx`).
    Sequence k (Training first, then Test) has `max_people` people if k = 0, none if k = 1, else
    a random number in [0, max_people].

    -> {"root", "size": [W, H], "intrinsics": 3×3 list, "sequences": [{"split", "name", "dir",
        "frames": [names], "num_people": people in the world, "people": [[visible ids] per frame]}]}
    """
    if n_train < 0 or n_test < 0 or frames < 1 or max_people < 0 or min(size) < 1:
        raise ValueError(
            f"need n_train, n_test, max_people >= 0, frames >= 1 and a positive size; got "
            f"n_train={n_train}, n_test={n_test}, frames={frames}, size={size}, "
            f"max_people={max_people}"
        )
    root, (width, height) = Path(root), size
    model = S.load_smplx(smplx_path, num_betas=NUM_BETAS)
    sequences = []
    for k in range(n_train + n_test):
        rng = np.random.default_rng([seed, k])  # sequence k does not depend on the others
        n_people = max_people if k == 0 else 0 if k == 1 else int(rng.integers(0, max_people + 1))
        split = SPLIT_NAMES[k >= n_train]
        name = f"synth{k:02d}_seq_000000"
        visible = _write_sequence(root / split / name, rng, model, n_people, frames, width, height)
        sequences.append(
            {
                "split": split,
                "name": name,
                "dir": str(root / split / name),
                "frames": [f"{t:06d}" for t in range(frames)],
                "num_people": n_people,
                "people": visible,
            }
        )
    return {
        "root": str(root),
        "size": [width, height],
        "intrinsics": intrinsics(width, height).tolist(),
        "sequences": sequences,
    }


def main(argv: list[str] | None = None) -> None:
    from human3r_jax.argtypes import nonnegative_int, positive_int

    ap = argparse.ArgumentParser(
        description="Write a tiny synthetic dataset in the preprocessed BEDLAM layout (for tests)."
    )
    ap.add_argument("--out", required=True, help="output root (Training/ and Test/ are created)")
    ap.add_argument("--smplx", required=True, help="SMPLX_NEUTRAL.npz or a folder holding smplx/SMPLX_NEUTRAL.npz")
    ap.add_argument("--n-train", type=nonnegative_int, default=3)
    ap.add_argument("--n-test", type=nonnegative_int, default=1)
    ap.add_argument("--frames", type=positive_int, default=8)
    ap.add_argument("--width", type=positive_int, default=96)
    ap.add_argument("--height", type=positive_int, default=64)
    ap.add_argument("--max-people", type=nonnegative_int, default=3)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    args = ap.parse_args(argv)
    info = make_synthetic_bedlam(
        args.out,
        args.smplx,
        n_train=args.n_train,
        n_test=args.n_test,
        frames=args.frames,
        size=(args.width, args.height),
        max_people=args.max_people,
        seed=args.seed,
    )
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
