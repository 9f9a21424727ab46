"""The SMPL-X body model and Human3R's placement of bodies in camera and world frames.

SMPL-X maps shape β, expression ψ and per-joint rotations θ to a mesh by linear blend skinning:

    T(β, ψ, θ) = T̄ + B_S(β) + B_E(ψ) + B_P(θ)              rest mesh with blend shapes
    J(β, ψ)    = 𝒥 (T̄ + B_S(β) + B_E(ψ))                   rest joints
    V          = Σ_k w_k G_k(θ, J) T                        skinned vertices

with the configuration Human3R builds (`smplx.create(..., 'smplx', gender='neutral', use_pca=False,
flat_hand_mean=True, num_betas=10)`, no face contour): full 15-joint hand poses around a flat hand,
10 betas, 10 expression coefficients, and 127 output joints = 55 skeleton joints, 21 joints read
off vertices (face, feet, fingertips) and 51 static face landmarks.

Joint order of the 55 rotations (the SMPL-X kinematic tree): 0 global orientation, 1–21 body,
22 jaw, 23 left eye, 24 right eye, 25–39 left hand, 40–54 right hand. Human3R predicts 53
rotations in another order (0 global, 1–21 body, 22–36 left hand, 37–51 right hand, 52 jaw) and
leaves the eyes at rest; `smplx_forward` accepts either.

The model file is the user's own licensed `SMPLX_NEUTRAL.npz` (the evaluation of RICH also reads the
gendered `SMPLX_MALE.npz` / `SMPLX_FEMALE.npz`); it is read without pickle.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from human3r_jax.errors import Human3rError
from human3r_jax.npz import open_npz, read_entry

SMPLX_URL = "https://smpl-x.is.tue.mpg.de"
NUM_VERTICES = 10475
NUM_JOINTS = 55  # skeleton joints
NUM_HUMAN3R_ROTATIONS = 53  # Human3R's prediction: the skeleton without the eyes
NUM_LANDMARKS = 51  # static face landmarks (no contour)
NUM_OUTPUT_JOINTS = 127
GENDERS = ("neutral", "male", "female")
PELVIS = 0
HEAD = 15  # Human3R's person centre: `smpl_transl` is this joint's camera-frame position

# Vertices read off as extra joints, in the order smplx appends them: nose, right eye, left eye,
# right ear, left ear; left big toe, small toe, heel; right big toe, small toe, heel; left then
# right fingertips (thumb, index, middle, ring, pinky). These are facts of the SMPL-X mesh topology.
EXTRA_JOINT_VERTICES = (
    9120,
    9929,
    9448,
    616,
    6,
    5770,
    5780,
    8846,
    8463,
    8474,
    8635,
    5361,
    4933,
    5058,
    5169,
    5286,
    8079,
    7669,
    7794,
    7905,
    8022,
)

# The shape space of the official files: v1.1 stores 300 identity then 100 expression components;
# v1.0 stores 10 + 10 (the smplx package reads the latter layout for any file with < 400).
_SHAPE_SPACE, _EXPRESSION_SPACE = 300, 100
_V10_SHAPE_SPACE = 10

_HIGHEST = jax.lax.Precision.HIGHEST  # body models are small: keep full float32 (no TF32 on GPUs)
_einsum = functools.partial(jnp.einsum, precision=_HIGHEST)


class SmplxError(Human3rError):
    """A missing or unsuitable SMPL-X model file, or inputs the body model cannot take."""


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "v_template",
        "shapedirs",
        "exprdirs",
        "posedirs",
        "J_regressor",
        "lbs_weights",
        "faces",
        "extra_joint_vertices",
        "lmk_faces_idx",
        "lmk_bary_coords",
    ],
    meta_fields=["parents"],
)
@dataclasses.dataclass(frozen=True)
class SmplxModel:
    """An SMPL-X model (Human3R's: the neutral one) as a pytree (V = 10475 vertices, F faces, K = 55 joints)."""

    v_template: jax.Array  # [V, 3] rest-pose template T̄ (metres)
    shapedirs: jax.Array  # [V, 3, n_betas] identity blend shapes
    exprdirs: jax.Array  # [V, 3, n_expression] expression blend shapes
    posedirs: jax.Array  # [V, 3, (K-1)·9] pose correctives, linear in (R_k − I) for k ≥ 1
    J_regressor: jax.Array  # [K, V] rest joints from rest vertices
    lbs_weights: jax.Array  # [V, K] skinning weights
    faces: jax.Array  # [F, 3] int32
    extra_joint_vertices: jax.Array  # [21] int32, see EXTRA_JOINT_VERTICES
    lmk_faces_idx: jax.Array  # [51] int32, the face of each static landmark
    lmk_bary_coords: jax.Array  # [51, 3] barycentric coordinates in that face
    parents: tuple[int, ...]  # [K] static kinematic tree, parents[0] = -1

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_expression(self) -> int:
        return self.exprdirs.shape[-1]


class SmplxOutput(NamedTuple):
    vertices: jax.Array  # [B, 10475, 3]
    joints: jax.Array  # [B, 127, 3], smplx's output order


# ---------------------------------------------------------------- loading


def _resolve(path: Path, name: str) -> Path:
    """The model file: `path` itself, or `name` (SMPLX_NEUTRAL.npz, ...) in the folder `path`."""
    if path.is_dir():
        candidates = [path / "smplx" / name, path / name]
        for c in candidates:
            if c.is_file():
                return c
        raise SmplxError(
            f"no SMPL-X model in {path}: looked for {' and '.join(map(str, candidates))}. "
            f"{name} comes from the official site {SMPLX_URL} "
            "(models_smplx_v1_1.zip, licence required)"
        )
    if not path.is_file():
        raise SmplxError(
            f"{path}: no such file. {name} comes from the official site "
            f"{SMPLX_URL} (models_smplx_v1_1.zip, licence required)"
        )
    if path.suffix != ".npz":
        raise SmplxError(
            f"{path}: expected the .npz release of SMPL-X ({name}); "
            ".pkl files are not read because unpickling can run code"
        )
    return path


def _stored_gender(npz, path: Path) -> str | None:
    """The file's `gender` entry, when it is stored as a string. An object-dtype entry would need
    pickle, which this loader never runs (a crafted pickle can execute code); the file name is then
    the only gender check. (The synthetic stand-in of the v1.1 file has no such entry; its only
    pickled entries are the unused name->index dicts `part2num` and `joint2num`.)"""
    if "gender" not in npz.files:
        return None
    g = read_entry(npz, path, "gender", SmplxError, skip_pickled=True)
    if g is None:
        return None
    if g.dtype.kind not in "US" or g.size != 1:
        raise SmplxError(f"{path}: entry 'gender' has dtype {g.dtype} and shape {g.shape}; expected one string")
    g = g.reshape(())[()]
    return (g.decode("latin1") if isinstance(g, bytes) else str(g)).strip().lower()


def _check_shape(path: Path, key: str, a: np.ndarray, shape: tuple, what: str = "") -> None:
    if a.dtype.kind not in "iuf":
        raise SmplxError(f"{path}: entry '{key}' has dtype {a.dtype}; SMPL-X stores numbers there")
    ok = a.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, a.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise SmplxError(f"{path}: entry '{key}' has shape {a.shape}; SMPL-X expects {want}{what}")


def load_smplx(
    path: str | Path, num_betas: int = 10, num_expression: int = 10, dtype=jnp.float32, gender: str = "neutral"
) -> SmplxModel:
    """Read the SMPL-X model of `gender` from `SMPLX_<GENDER>.npz` (or a directory holding
    `smplx/SMPLX_<GENDER>.npz` or `SMPLX_<GENDER>.npz`), keeping the first `num_betas` identity and
    `num_expression` expression components (Human3R: neutral, 10 and 10; BEDLAM ground truth: 11 betas;
    RICH ground truth: male or female, 10 and 10).

    A file whose name or stored `gender` says another gender is refused. Raises SmplxError naming the
    file and the entry at fault.
    """
    if gender not in GENDERS:
        raise SmplxError(f"load_smplx: gender {gender!r}; expected one of {', '.join(GENDERS)}")
    name = f"SMPLX_{gender.upper()}.npz"
    path = _resolve(Path(path), name)
    asked, source = (
        "Human3R uses the neutral" if gender == "neutral" else f"asked for the {gender}",
        f"({name} from {SMPLX_URL})",
    )
    other = {"NEUTRAL", "MALE", "FEMALE"} & set(re.split(r"[^A-Z]+", path.stem.upper())) - {gender.upper()}
    if other:
        what = "gendered" if gender == "neutral" else "/".join(sorted(other)).lower()
        raise SmplxError(f"{path}: a {what} SMPL-X model; {asked} one {source}")
    with open_npz(path, SmplxError) as npz:
        stored = _stored_gender(npz, path)
        if stored is not None and stored != gender:
            raise SmplxError(f"{path}: entry 'gender' is {stored!r}; {asked} SMPL-X model {source}")
        required = (
            "v_template",
            "f",
            "shapedirs",
            "posedirs",
            "J_regressor",
            "kintree_table",
            "weights",
            "lmk_faces_idx",
            "lmk_bary_coords",
        )
        missing = [k for k in required if k not in npz.files]
        if missing:
            raise SmplxError(
                f"{path}: missing entries {missing}; this is not an SMPL-X model file "
                f"(SMPLX_NEUTRAL.npz from {SMPLX_URL})"
            )
        a = {k: read_entry(npz, path, k, SmplxError) for k in required}

    V, K = NUM_VERTICES, NUM_JOINTS
    _check_shape(
        path,
        "v_template",
        a["v_template"],
        (V, 3),
        f" (a {a['v_template'].shape[0]}-vertex mesh: SMPL and SMPL+H have 6890)" if a["v_template"].ndim == 2 else "",
    )
    _check_shape(path, "f", a["f"], (None, 3))
    _check_shape(path, "shapedirs", a["shapedirs"], (V, 3, None))
    _check_shape(path, "posedirs", a["posedirs"], (V, 3, (K - 1) * 9))
    _check_shape(path, "J_regressor", a["J_regressor"], (K, V))
    _check_shape(path, "kintree_table", a["kintree_table"], (2, K))
    _check_shape(path, "weights", a["weights"], (V, K))
    _check_shape(path, "lmk_faces_idx", a["lmk_faces_idx"], (NUM_LANDMARKS,))
    _check_shape(path, "lmk_bary_coords", a["lmk_bary_coords"], (NUM_LANDMARKS, 3))

    n_dirs = a["shapedirs"].shape[2]
    if n_dirs >= _SHAPE_SPACE + _EXPRESSION_SPACE:
        n_shape, n_expr, expr_start = _SHAPE_SPACE, _EXPRESSION_SPACE, _SHAPE_SPACE
    elif n_dirs == 2 * _V10_SHAPE_SPACE:
        n_shape, n_expr, expr_start = _V10_SHAPE_SPACE, _V10_SHAPE_SPACE, _V10_SHAPE_SPACE
    else:
        raise SmplxError(
            f"{path}: entry 'shapedirs' has {n_dirs} components; SMPL-X v1.1 has "
            f"{_SHAPE_SPACE} shape + {_EXPRESSION_SPACE} expression = 400 (v1.0: 10 + 10)"
        )
    if not (0 < num_betas <= n_shape and 0 < num_expression <= n_expr):
        raise SmplxError(
            f"{path}: asked for {num_betas} betas and {num_expression} expression "
            f"coefficients; 'shapedirs' holds {n_shape} and {n_expr}"
        )

    f = a["f"].astype(np.int64)
    if f.min() < 0 or f.max() >= V:
        raise SmplxError(f"{path}: entry 'f' indexes vertices outside [0, {V})")
    lmk = a["lmk_faces_idx"].astype(np.int64)
    if lmk.min() < 0 or lmk.max() >= len(f):
        raise SmplxError(f"{path}: entry 'lmk_faces_idx' indexes faces outside [0, {len(f)})")
    # Row 0 holds the parents; the root's entry is uint32(-1) in the official files.
    parents = [-1] + [int(p) for p in a["kintree_table"][0, 1:]]
    if not all(0 <= p < j for j, p in enumerate(parents[1:], 1)):
        raise SmplxError(f"{path}: entry 'kintree_table' is not a tree with parents before children")

    return SmplxModel(
        v_template=jnp.asarray(a["v_template"], dtype),
        shapedirs=jnp.asarray(a["shapedirs"][:, :, :num_betas], dtype),
        exprdirs=jnp.asarray(a["shapedirs"][:, :, expr_start : expr_start + num_expression], dtype),
        posedirs=jnp.asarray(a["posedirs"], dtype),
        J_regressor=jnp.asarray(a["J_regressor"], dtype),
        lbs_weights=jnp.asarray(a["weights"], dtype),
        faces=jnp.asarray(f, jnp.int32),
        extra_joint_vertices=jnp.asarray(EXTRA_JOINT_VERTICES, jnp.int32),
        lmk_faces_idx=jnp.asarray(lmk, jnp.int32),
        lmk_bary_coords=jnp.asarray(a["lmk_bary_coords"], dtype),
        parents=tuple(parents),
    )


# ---------------------------------------------------------------- forward


def human3r_to_smplx_order(rotmats: jax.Array) -> jax.Array:
    """Human3R's 53 rotations [B, 53, 3, 3] (global, body, left hand, right hand, jaw) -> the 55
    SMPL-X joints [B, 55, 3, 3] (global, body, jaw, eyes, left hand, right hand), eyes at rest."""
    eyes = jnp.broadcast_to(jnp.eye(3, dtype=rotmats.dtype), (rotmats.shape[0], 2, 3, 3))
    return jnp.concatenate([rotmats[:, :22], rotmats[:, 52:53], eyes, rotmats[:, 22:52]], axis=1)


@functools.cache
def _tree_levels(parents: tuple[int, ...]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(joints, their parents) grouped by depth below the root, so that the kinematic chain is
    composed one depth at a time (10 batched steps for SMPL-X instead of 54 sequential ones)."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    levels = []
    for d in range(1, max(depth) + 1):
        joints = np.array([j for j in range(len(parents)) if depth[j] == d])
        levels.append((joints, np.array(parents)[joints]))
    return tuple(levels)


def _smplx_rotmats(fn: str, rotmats, dtype) -> jax.Array:
    """[B, 55, 3, 3] in SMPL-X order from either accepted layout."""
    rotmats = jnp.asarray(rotmats, dtype)
    if rotmats.ndim != 4 or rotmats.shape[1] not in (NUM_JOINTS, NUM_HUMAN3R_ROTATIONS) or rotmats.shape[2:] != (3, 3):
        raise SmplxError(
            f"{fn}: rotmats has shape {list(rotmats.shape)}; expected [B, 55, 3, 3] "
            "(SMPL-X order) or [B, 53, 3, 3] (Human3R's order)"
        )
    if rotmats.shape[1] == NUM_HUMAN3R_ROTATIONS:
        rotmats = human3r_to_smplx_order(rotmats)
    return rotmats


def _check_batch(fn: str, **arrays) -> int:
    sizes = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
        raise SmplxError(f"{fn}: batch sizes differ: {shapes}")
    return next(iter(sizes.values()))


def _check_trailing(fn: str, name: str, x, trailing: tuple) -> None:
    if x.ndim != 1 + len(trailing) or tuple(x.shape[1:]) != trailing:
        want = "[B, " + ", ".join(map(str, trailing)) + "]"
        raise SmplxError(f"{fn}: {name} has shape {list(x.shape)}; expected {want}")


def smplx_forward(model: SmplxModel, betas, expression, rotmats) -> SmplxOutput:
    """SMPL-X with linear blend skinning (jit-able, batched).

    betas      [B, n_betas]     identity coefficients β
    expression [B, n_expression] expression coefficients ψ
    rotmats    [B, 55, 3, 3]    joint rotations in SMPL-X order (rotmats[:, 0] = global orientation)
               or [B, 53, 3, 3] Human3R's order, eyes at rest
    -> SmplxOutput(vertices [B, 10475, 3], joints [B, 127, 3]), no translation applied.
    """
    dt = model.v_template.dtype
    betas, expression = jnp.asarray(betas, dt), jnp.asarray(expression, dt)
    rotmats = _smplx_rotmats("smplx_forward", rotmats, dt)
    _check_trailing("smplx_forward", "betas", betas, (model.num_betas,))
    _check_trailing("smplx_forward", "expression", expression, (model.num_expression,))
    B = _check_batch("smplx_forward", betas=betas, expression=expression, rotmats=rotmats)

    # Rest mesh with identity and expression blend shapes, and the rest joints regressed from it.
    v_shaped = (
        model.v_template
        + _einsum("bl,vcl->bvc", betas, model.shapedirs)
        + _einsum("bl,vcl->bvc", expression, model.exprdirs)
    )
    J = _einsum("kv,bvc->bkc", model.J_regressor, v_shaped)  # [B, K, 3]

    # Pose correctives, linear in the deviation of each non-root rotation from the rest pose.
    pose_feature = (rotmats[:, 1:] - jnp.eye(3, dtype=dt)).reshape(B, (NUM_JOINTS - 1) * 9)
    v_posed = v_shaped + _einsum("bp,vcp->bvc", pose_feature, model.posedirs)

    # Forward kinematics, G_k = G_parent(k) [R_k | J_k − J_parent(k)]: world rotation G_R and
    # position G_t of every joint.
    parents = np.array(model.parents)
    rel = J - jnp.concatenate([jnp.zeros_like(J[:, :1]), J[:, parents[1:]]], axis=1)
    G_R, G_t = rotmats, rel
    for joints, par in _tree_levels(model.parents):
        G_t = G_t.at[:, joints].set(_einsum("bkij,bkj->bki", G_R[:, par], rel[:, joints]) + G_t[:, par])
        G_R = G_R.at[:, joints].set(jnp.matmul(G_R[:, par], rotmats[:, joints], precision=_HIGHEST))
    posed_joints = G_t

    # Skinning: each vertex moves by the weighted blend of its joints' rest-to-posed transforms.
    A_t = G_t - _einsum("bkij,bkj->bki", G_R, J)
    T_R = _einsum("vk,bkij->bvij", model.lbs_weights, G_R)
    T_t = _einsum("vk,bki->bvi", model.lbs_weights, A_t)
    vertices = _einsum("bvij,bvj->bvi", T_R, v_posed) + T_t

    # 127 joints: skeleton, vertex joints, then landmarks interpolated on their faces.
    lmk_vertices = vertices[:, model.faces[model.lmk_faces_idx]]  # [B, 51, 3 corners, 3]
    landmarks = _einsum("blfi,lf->bli", lmk_vertices, model.lmk_bary_coords)
    joints = jnp.concatenate([posed_joints, vertices[:, model.extra_joint_vertices], landmarks], axis=1)
    return SmplxOutput(vertices, joints)


# ---------------------------------------------------------------- placement


def place_in_camera(body: SmplxOutput, root_rotmat, transl) -> SmplxOutput:
    """Human3R's head-centred placement: x_cam = R (x − J[head]) + t for vertices and joints.

    body        SmplxOutput of a forward with the global orientation at rest (identity)
    root_rotmat [B, 3, 3]  R, the predicted global orientation (Human3R's rotation 0, camera frame)
    transl      [B, 3]     t = `smpl_transl`, the head joint's position in the camera frame
    -> SmplxOutput in the camera frame; the pelvis is joints[:, 0].

    (SMPL_Layer first rotates about the pelvis and then moves the head to t; the pelvis cancels.)
    """
    dt = body.vertices.dtype
    R, t = jnp.asarray(root_rotmat, dt), jnp.asarray(transl, dt)
    _check_trailing("place_in_camera", "root_rotmat", R, (3, 3))
    _check_trailing("place_in_camera", "transl", t, (3,))
    _check_batch("place_in_camera", vertices=body.vertices, root_rotmat=R, transl=t)
    head = body.joints[:, HEAD : HEAD + 1]

    def place(x):
        return _einsum("bij,bnj->bni", R, x - head) + t[:, None]

    return SmplxOutput(place(body.vertices), place(body.joints))


def to_world(body: SmplxOutput, cam2world) -> SmplxOutput:
    """x_world = R_c2w x_cam + t_c2w.

    body      SmplxOutput in a camera frame, [B, N, 3] leaves
    cam2world [4, 4] (the frame's camera, shared by its B people) or [B, 4, 4]
    """
    dt = body.vertices.dtype
    c2w = jnp.asarray(cam2world, dt)
    B = body.vertices.shape[0]
    if c2w.shape == (4, 4):
        c2w = jnp.broadcast_to(c2w, (B, 4, 4))
    _check_trailing("to_world", "cam2world", c2w, (4, 4))
    _check_batch("to_world", vertices=body.vertices, cam2world=c2w)
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]

    def move(x):
        return _einsum("bij,bnj->bni", R, x) + t[:, None]

    return SmplxOutput(move(body.vertices), move(body.joints))


def bodies_in_camera(model: SmplxModel, betas, expression, rotmats, transl) -> SmplxOutput:
    """Human3R's SMPL_Layer: the body with its global orientation at rest, placed by
    `place_in_camera` with rotation 0 and the head position `transl`.

    betas [B, n_betas], expression [B, n_expression], rotmats [B, 53, 3, 3] (Human3R's order) or
    [B, 55, 3, 3] (SMPL-X order), transl [B, 3] -> SmplxOutput in the camera frame.
    """
    dt = model.v_template.dtype
    rotmats = _smplx_rotmats("bodies_in_camera", rotmats, dt)
    betas, expression, transl = (jnp.asarray(x, dt) for x in (betas, expression, transl))
    _check_trailing("bodies_in_camera", "transl", transl, (3,))
    _check_batch("bodies_in_camera", betas=betas, expression=expression, rotmats=rotmats, transl=transl)
    rest_root = rotmats.at[:, 0].set(jnp.eye(3, dtype=rotmats.dtype))
    return place_in_camera(smplx_forward(model, betas, expression, rest_root), rotmats[:, 0], transl)
