"""The body models of the human mesh recovery evaluation.

Every dataset's ground truth is posed with its own body model, and predictions and ground truth are compared
on the SMPL mesh (6890 vertices) with the dataset's joint regressor:

    dataset   ground-truth body model                      joints on SMPL vertices             pelvis
    3dpw      SMPL v1.1.0 male / female                    Human3.6M regressor, 14 LSP rows    joints (2, 3)
    emdb1/2   SMPL v1.1.0 male / female                    neutral SMPL J_regressor[:24]       joints (1, 2)
    rich      SMPL-X v1.1 male / female, mean hands        neutral SMPL J_regressor[:24]       joints (1, 2)
              (`smplx_gt_forward`), then smplx2smpl

Predictions come from the neutral SMPL-X model (`human3r_jax.models.smplx`) and are carried to SMPL by the
same `smplx2smpl` map.

The files are the user's own (licensed, never shipped; `FILES` says where each comes from), laid out as
fanegg/Human3R's `scripts/fetch_smplx.sh` leaves them: ROOT/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl,
ROOT/smpl/J_regressor_h36m.npy, ROOT/smplx/SMPLX_{NEUTRAL,MALE,FEMALE}.npz, ROOT/smplx/smplx2smpl.pkl (each
is also found directly in ROOT). Pickles are read by `human3r_jax.pickles` (no code runs; chumpy and scipy
are not needed), .npz/.npy files without pickle.

SMPL is posed here in numpy float64 by the same linear blend skinning as the smplx package (the reference
implementation the official evaluation calls, in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from human3r_jax.errors import Human3rError
from human3r_jax.models.smplx import NUM_VERTICES as SMPLX_NUM_VERTICES
from human3r_jax.models.smplx import SmplxError, SmplxModel, load_smplx, smplx_forward
from human3r_jax.npz import read_npy, read_npz
from human3r_jax.pickles import load_pickle, to_array

NUM_VERTICES = 6890
NUM_JOINTS = 24
NUM_BETAS = 10
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 207 pose correctives, linear in (R_k − I) for k ≥ 1
NUM_H36M_JOINTS = 17
# The 14 LSP joints (SPIN's order: R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist, R elbow,
# R shoulder, L shoulder, L elbow, L wrist, neck, head top) among the Human3.6M regressor's 17 rows.
H36M_TO_LSP14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
DATASETS = ("3dpw", "emdb1", "emdb2", "rich")
GENDERS = ("neutral", "male", "female")
SMPLX_BODY_JOINTS = 21
SMPLX_HAND_JOINTS = 15
# smplx2smpl is a barycentric map (3 SMPL-X vertices per SMPL vertex); far more per row is another kind of file.
MAX_MAP_NONZEROS = 32
_CHUNK = 128  # bodies posed at once: bounds the [chunk, 12, V] skinning transforms (~85 MB for SMPL)


class BodyModelError(Human3rError):
    """A missing or unsuitable body-model file (the message starts with its path), or inputs a body model
    cannot take."""


@dataclass(frozen=True)
class BodyModelFile:
    sub: str  # the folder of the official layout (ROOT/<sub>/<name>)
    what: str
    source: str


_SMPL = (
    "https://smpl.is.tue.mpg.de (SMPL_python_v.1.1.0.zip: smpl/models/basicmodel_{}_lbs_10_207_0_v1.1.0.pkl, renamed)"
)
_SMPLX = "https://smpl-x.is.tue.mpg.de (models_smplx_v1_1.zip: models/smplx/{})"
_MULTI_HMR = (
    "Multi-HMR's supplementary files (https://drive.google.com/drive/folders/"
    "1JU7CuU2rKkwD7WWjvSZJKpQFFk_Z6NL7), which fanegg/Human3R's scripts/fetch_smplx.sh downloads"
)
FILES = {
    "SMPL_NEUTRAL.pkl": BodyModelFile("smpl", "the neutral SMPL v1.1.0 model", _SMPL.format("neutral")),
    "SMPL_MALE.pkl": BodyModelFile("smpl", "the male SMPL v1.1.0 model", _SMPL.format("m")),
    "SMPL_FEMALE.pkl": BodyModelFile("smpl", "the female SMPL v1.1.0 model", _SMPL.format("f")),
    "J_regressor_h36m.npy": BodyModelFile(
        "smpl", "the Human3.6M joint regressor on SMPL vertices [17, 6890]", _MULTI_HMR
    ),
    "SMPLX_NEUTRAL.npz": BodyModelFile("smplx", "the neutral SMPL-X v1.1 model", _SMPLX.format("SMPLX_NEUTRAL.npz")),
    "SMPLX_MALE.npz": BodyModelFile("smplx", "the male SMPL-X v1.1 model", _SMPLX.format("SMPLX_MALE.npz")),
    "SMPLX_FEMALE.npz": BodyModelFile("smplx", "the female SMPL-X v1.1 model", _SMPLX.format("SMPLX_FEMALE.npz")),
    "smplx2smpl.pkl": BodyModelFile("smplx", "the SMPL-X → SMPL vertex map (key 'matrix', [6890, 10475])", _MULTI_HMR),
}


# ---------------------------------------------------------------- SMPL


@dataclass(frozen=True, eq=False)
class SmplModel:
    """SMPL (V = 6890 vertices, K = 24 joints), numpy float64, read-only arrays."""

    v_template: np.ndarray  # [V, 3] rest-pose template (metres)
    shapedirs: np.ndarray  # [V, 3, 10] identity blend shapes
    posedirs: np.ndarray  # [V, 3, 207] pose correctives
    J_regressor: np.ndarray  # [K, V] rest joints from rest vertices (dense)
    weights: np.ndarray  # [V, K] skinning weights
    faces: np.ndarray  # [F, 3] int64 (F = 13776)
    parents: tuple[int, ...]  # [K] kinematic tree, parents[0] = -1


_SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def _check(path: Path, key: str, a: np.ndarray, shape: tuple) -> None:
    """Numbers of `shape` (None: any size), finite: else one error naming the file and the entry."""
    if a.dtype.kind not in "iuf":
        raise BodyModelError(f"{path}: entry '{key}' has dtype {a.dtype}; expected numbers")
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise BodyModelError(f"{path}: entry '{key}' has shape {a.shape}; expected {want}")
    if not np.isfinite(a).all():
        raise BodyModelError(f"{path}: entry '{key}' holds non-finite values")


def _indices(path: Path, key: str, a: np.ndarray, upper: int) -> np.ndarray:
    """Whole numbers in [0, upper) as int64."""
    if (a != np.round(a)).any() or (a < 0).any() or (a >= upper).any():
        raise BodyModelError(f"{path}: entry '{key}' holds values that are not indices in [0, {upper})")
    return a.astype(np.int64)


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype)
    a.flags.writeable = False
    return a


def load_smpl(path: str | Path) -> SmplModel:
    """An SMPL model from the official .pkl (v1.1.0: numpy arrays and a scipy sparse J_regressor; v1.0: chumpy
    arrays) or an .npz with the same keys. Only the first 10 shape components are kept (smplx's default).

    Raises BodyModelError naming the file and the entry at fault.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        data = load_pickle(path, BodyModelError, encoding="latin1")  # Python-2 pickles of numpy arrays
        if not isinstance(data, dict):
            raise BodyModelError(f"{path}: holds a {type(data).__name__}, not the dict of an SMPL model file")
        missing = [k for k in _SMPL_KEYS if k not in data]
        if missing:
            raise BodyModelError(f"{path}: missing entries {missing}; this is not an SMPL model file")
        a = {k: to_array(data[k], f"{path}: entry '{k}'", BodyModelError) for k in _SMPL_KEYS}
    elif path.suffix == ".npz":
        a = read_npz(path, BodyModelError, _SMPL_KEYS)
    else:
        raise BodyModelError(f"{path}: expected an SMPL model as .pkl (the official release) or .npz")

    V, K = NUM_VERTICES, NUM_JOINTS
    _check(path, "v_template", a["v_template"], (V, 3))
    _check(path, "shapedirs", a["shapedirs"], (V, 3, None))
    if a["shapedirs"].shape[2] < NUM_BETAS:
        raise BodyModelError(
            f"{path}: entry 'shapedirs' has {a['shapedirs'].shape[2]} components; expected at least {NUM_BETAS}"
        )
    _check(path, "posedirs", a["posedirs"], (V, 3, NUM_POSE_BASIS))
    _check(path, "J_regressor", a["J_regressor"], (K, V))
    _check(path, "weights", a["weights"], (V, K))
    _check(path, "kintree_table", a["kintree_table"], (2, K))
    _check(path, "f", a["f"], (None, 3))
    faces = _indices(path, "f", a["f"], V)
    # Row 0 holds the parents; the root's entry is uint32(-1) in the official files.
    parents = (-1, *_indices(path, "kintree_table", a["kintree_table"][0, 1:], K).tolist())
    if not all(p < j for j, p in enumerate(parents[1:], 1)):
        raise BodyModelError(f"{path}: entry 'kintree_table' is not a tree with parents before children")
    return SmplModel(
        v_template=_frozen(a["v_template"], np.float64),
        shapedirs=_frozen(a["shapedirs"][:, :, :NUM_BETAS], np.float64),
        posedirs=_frozen(a["posedirs"], np.float64),
        J_regressor=_frozen(a["J_regressor"], np.float64),
        weights=_frozen(a["weights"], np.float64),
        faces=_frozen(faces, np.int64),
        parents=parents,
    )


def batch_rodrigues(rotvecs: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] → rotation matrices [..., 3, 3], as smplx's `batch_rodrigues` computes them: the
    angle is the norm of r + 1e-8 (every component shifted), so a zero vector gives exactly the identity."""
    rotvecs = np.asarray(rotvecs, np.float64)
    angle = np.linalg.norm(rotvecs + 1e-8, axis=-1, keepdims=True)
    x, y, z = np.moveaxis(rotvecs / angle, -1, 0)
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*x.shape, 3, 3)
    sin, cos = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + sin * K + (1 - cos) * (K @ K)


def _batch(fn: str, name: str, x, trailing: tuple) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 1 + len(trailing) or x.shape[1:] != trailing:
        want = "[N, " + ", ".join(map(str, trailing)) + "]"
        raise BodyModelError(f"{fn}: {name} has shape {list(x.shape)}; expected {want}")
    return x


def _same_batch(fn: str, **arrays: np.ndarray) -> int:
    if len({len(a) for a in arrays.values()}) != 1:
        shapes = ", ".join(f"{k} {list(a.shape)}" for k, a in arrays.items())
        raise BodyModelError(f"{fn}: batch sizes differ: {shapes}")
    return len(next(iter(arrays.values())))


def smpl_forward(model: SmplModel, betas, pose, transl=None) -> tuple[np.ndarray, np.ndarray]:
    """SMPL by linear blend skinning, as smplx.SMPL poses it (float64).

    betas  [N, 10]      shape coefficients β
    pose   [N, 24, 3]   axis-angle rotations, the global orientation first
    transl [N, 3]       added to vertices and joints (None: no translation)
    -> vertices [N, 6890, 3], joints [N, 24, 3] (the posed skeleton: 𝒥 · shaped template, then posed)
    """
    betas = _batch("smpl_forward", "betas", betas, (NUM_BETAS,))
    pose = _batch("smpl_forward", "pose", pose, (NUM_JOINTS, 3))
    n = _same_batch("smpl_forward", betas=betas, pose=pose)
    vertices, joints = np.empty((n, NUM_VERTICES, 3)), np.empty((n, NUM_JOINTS, 3))
    for s in range(0, n, _CHUNK):
        vertices[s : s + _CHUNK], joints[s : s + _CHUNK] = _smpl_lbs(model, betas[s : s + _CHUNK], pose[s : s + _CHUNK])
    if transl is not None:
        transl = _batch("smpl_forward", "transl", transl, (3,))
        _same_batch("smpl_forward", betas=betas, transl=transl)
        vertices += transl[:, None]
        joints += transl[:, None]
    return vertices, joints


def _smpl_lbs(m: SmplModel, betas: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, V, K = len(pose), NUM_VERTICES, NUM_JOINTS
    R = batch_rodrigues(pose)  # [n, K, 3, 3]
    # Rest mesh with identity blend shapes, and the rest joints regressed from it.
    v_shaped = m.v_template + (betas @ m.shapedirs.reshape(V * 3, NUM_BETAS).T).reshape(n, V, 3)
    J = m.J_regressor @ v_shaped  # [n, K, 3]
    # Pose correctives, linear in each non-root rotation's deviation from the rest pose (row-major 3×3).
    pose_feature = (R[:, 1:] - np.eye(3)).reshape(n, NUM_POSE_BASIS)
    v_posed = v_shaped + (pose_feature @ m.posedirs.reshape(V * 3, NUM_POSE_BASIS).T).reshape(n, V, 3)
    # Forward kinematics: world rotation G_R and position G_t of every joint, parents before children.
    G_R, G_t = np.empty_like(R), np.empty_like(J)
    G_R[:, 0], G_t[:, 0] = R[:, 0], J[:, 0]
    for k, p in enumerate(m.parents[1:], 1):
        G_R[:, k] = G_R[:, p] @ R[:, k]
        G_t[:, k] = np.einsum("nij,nj->ni", G_R[:, p], J[:, k] - J[:, p]) + G_t[:, p]
    # Skinning: every vertex moves by the weighted blend of its joints' rest-to-posed transforms [R | t], laid out
    # [n, 12, V] (contiguous along the vertices: several times faster than einsum over [n, V, 3, 3]).
    A = np.concatenate([G_R.reshape(n, K, 9), G_t - np.einsum("nkij,nkj->nki", G_R, J)], axis=2)  # [n, K, 12]
    T = np.swapaxes(A, 1, 2) @ m.weights.T  # [n, 12, V]
    blend_R, v = T[:, :9].reshape(n, 3, 3, V), np.swapaxes(v_posed, 1, 2)  # [n, 3, 3, V], [n, 3, V]
    vertices = sum(blend_R[:, :, j] * v[:, None, j] for j in range(3)) + T[:, 9:]
    return np.swapaxes(vertices, 1, 2), G_t


# ---------------------------------------------------------------- SMPL-X ground truth (RICH)


def read_hands_mean(path: str | Path) -> np.ndarray:
    """The mean hand poses [2, 45] (left, right; 15 axis-angle joints each) of an SMPL-X .npz."""
    path = Path(path)
    a = read_npz(path, BodyModelError, ["hands_meanl", "hands_meanr"])
    for k in a:
        _check(path, k, a[k], (SMPLX_HAND_JOINTS * 3,))
    return np.stack([a["hands_meanl"], a["hands_meanr"]]).astype(np.float64)


@jax.jit
def _smplx_vertices(model: SmplxModel, betas, expression, rotmats) -> jax.Array:
    return smplx_forward(model, betas, expression, rotmats).vertices


def smplx_gt_forward(model: SmplxModel, hands_mean, betas, global_orient, body_pose, transl) -> np.ndarray:
    """RICH's ground-truth SMPL-X mesh: `smplx.create(gender, num_pca_comps=12)` (hand PCA, not the flat hand
    mean) with zero hand coefficients, jaw, eyes and expression, so the hands take the mean pose.

    model         an SMPL-X model with 10 betas (`load_smplx(..., gender=...)`)
    hands_mean    [2, 45]      `read_hands_mean` of the same file
    betas         [N, 10]
    global_orient [N, 3]       axis-angle
    body_pose     [N, 21, 3]   axis-angle
    transl        [N, 3]
    -> vertices [N, 10475, 3] float32
    """
    fn = "smplx_gt_forward"
    hands_mean = np.asarray(hands_mean, np.float64)
    if hands_mean.shape != (2, SMPLX_HAND_JOINTS * 3):
        raise BodyModelError(f"{fn}: hands_mean has shape {list(hands_mean.shape)}; expected [2, 45]")
    betas = _batch(fn, "betas", betas, (model.num_betas,))
    global_orient = _batch(fn, "global_orient", global_orient, (3,))
    body_pose = _batch(fn, "body_pose", body_pose, (SMPLX_BODY_JOINTS, 3))
    transl = _batch(fn, "transl", transl, (3,))
    n = _same_batch(fn, betas=betas, global_orient=global_orient, body_pose=body_pose, transl=transl)

    # The 55 rotations in SMPL-X order: global, body, jaw and eyes at rest, left hand, right hand.
    rotvecs = np.zeros((n, 55, 3))
    rotvecs[:, 0], rotvecs[:, 1:22] = global_orient, body_pose
    rotvecs[:, 25:] = hands_mean.reshape(2 * SMPLX_HAND_JOINTS, 3)
    rotmats = batch_rodrigues(rotvecs).astype(np.float32)
    betas = betas.astype(np.float32)

    # Chunks padded to a power of two (at most _CHUNK): jit compiles a few shapes whatever N is.
    size = min(_CHUNK, 1 << max(n - 1, 0).bit_length())
    expression = np.zeros((size, model.num_expression), np.float32)
    vertices = np.empty((n, SMPLX_NUM_VERTICES, 3), np.float32)
    for s in range(0, n, size):
        e = min(s + size, n)
        pad = [(0, size - (e - s))]
        b = np.pad(betas[s:e], pad + [(0, 0)], mode="edge")
        r = np.pad(rotmats[s:e], pad + [(0, 0)] * 3, mode="edge")
        vertices[s:e] = np.asarray(_smplx_vertices(model, b, expression, r))[: e - s]
    return vertices + transl[:, None].astype(np.float32)


# ---------------------------------------------------------------- SMPL-X → SMPL, joint regressors


@dataclass(frozen=True, eq=False)
class SmplxToSmpl:
    """smplx2smpl.pkl's map, V_smpl = M · V_smplx, kept as its nonzero entries row by row: SMPL vertex i =
    Σ_k weight[i, k] · SMPL-X vertex index[i, k] (rows with fewer entries padded with zero weights). A map that
    is not sparse (more than MAX_MAP_NONZEROS per row) is kept dense instead."""

    index: np.ndarray  # [6890, k] int64, ascending within a row
    weight: np.ndarray  # [6890, k] float32 (the official map is cast to float32)
    dense: np.ndarray | None = None  # [6890, 10475] float32, only for a map that is not sparse

    def apply(self, verts) -> np.ndarray:
        """SMPL-X vertices [N, 10475, 3] → SMPL vertices [N, 6890, 3]. Float32 input gives float32, equal to
        the official dense float32 matmul up to summation order; float64 input gives float64."""
        verts = np.asarray(verts)
        if verts.ndim != 3 or verts.shape[1:] != (SMPLX_NUM_VERTICES, 3):
            raise BodyModelError(
                f"SmplxToSmpl.apply: verts has shape {list(verts.shape)}; expected [N, {SMPLX_NUM_VERTICES}, 3]"
            )
        dt = np.result_type(verts.dtype, np.float32)
        if self.dense is not None:
            return np.einsum("ij,njc->nic", self.dense.astype(dt), verts.astype(dt))
        out = np.zeros((len(verts), NUM_VERTICES, 3), dt)
        for k in range(self.index.shape[1]):
            out += self.weight[:, k, None] * verts[:, self.index[:, k]]
        return out


def load_smplx2smpl(path: str | Path) -> SmplxToSmpl:
    """The SMPL-X → SMPL map of smplx2smpl.pkl (a dict whose 'matrix' is a dense [6890, 10475] array)."""
    path = Path(path)
    data = load_pickle(path, BodyModelError, encoding="latin1")
    if not isinstance(data, dict) or "matrix" not in data:
        raise BodyModelError(
            f"{path}: expected a dict with the entry 'matrix' (the SMPL-X → SMPL vertex map), "
            f"found {type(data).__name__}{' without it' if isinstance(data, dict) else ''}"
        )
    m = to_array(data["matrix"], f"{path}: entry 'matrix'", BodyModelError)
    _check(path, "matrix", m, (NUM_VERTICES, SMPLX_NUM_VERTICES))
    m = m.astype(np.float32, copy=False)
    rows, cols = np.nonzero(m)  # row-major: each row's columns in ascending order
    counts = np.bincount(rows, minlength=NUM_VERTICES)
    if counts.max() > MAX_MAP_NONZEROS:  # the official map is barycentric; anything else is applied densely
        empty = np.zeros((NUM_VERTICES, 0))
        return SmplxToSmpl(_frozen(empty, np.int64), _frozen(empty, np.float32), _frozen(m, np.float32))
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # position within the row
    index = np.zeros((NUM_VERTICES, counts.max()), np.int64)
    weight = np.zeros((NUM_VERTICES, counts.max()), np.float32)
    index[rows, slot], weight[rows, slot] = cols, m[rows, cols]
    return SmplxToSmpl(_frozen(index, np.int64), _frozen(weight, np.float32))


def load_h36m_regressor(path: str | Path) -> np.ndarray:
    """J_regressor_h36m.npy: the 17 Human3.6M joints from SMPL vertices, [17, 6890] float32 (as the official
    evaluation casts it)."""
    path = Path(path)
    a = read_npy(path, BodyModelError)
    _check(path, "J_regressor_h36m", a, (NUM_H36M_JOINTS, NUM_VERTICES))
    return a.astype(np.float32)


# ---------------------------------------------------------------- what a dataset needs


@dataclass
class BodyModels:
    """Everything the human mesh recovery evaluation of one dataset needs."""

    smplx_neutral: SmplxModel  # the predictions' body model: 10 betas, 10 expression coefficients
    smplx2smpl: SmplxToSmpl
    smpl: dict[str, SmplModel]  # "neutral" always; "male", "female" for 3dpw and emdb
    smplx_gendered: dict[str, SmplxModel]  # "male", "female" for rich
    hands_mean: dict[str, np.ndarray]  # [2, 45] per key of smplx_gendered
    regressor: np.ndarray  # float32 [J, 6890]: 3dpw h36m[H36M_TO_LSP14] (J = 14); else SMPL J_regressor[:24]
    pelvis: tuple[int, int]  # the two hip joints of `regressor` whose mean is the pelvis


def needed_files(dataset: str) -> tuple[str, ...]:
    """The names (keys of FILES) that the evaluation of `dataset` reads."""
    if dataset not in DATASETS:
        raise BodyModelError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    names = ["SMPL_NEUTRAL.pkl", "SMPLX_NEUTRAL.npz", "smplx2smpl.pkl"]
    if dataset == "rich":
        names += ["SMPLX_MALE.npz", "SMPLX_FEMALE.npz"]
    else:
        names += ["SMPL_MALE.pkl", "SMPL_FEMALE.pkl"]
    if dataset == "3dpw":
        names.append("J_regressor_h36m.npy")
    return tuple(names)


def find_file(root: str | Path, name: str) -> Path:
    """ROOT/<sub>/<name> (the official layout), else ROOT/<name>; a missing file says where it comes from."""
    root, info = Path(root), FILES[name]
    candidates = (root / info.sub / name, root / name)
    for c in candidates:
        if c.is_file():
            return c
    raise BodyModelError(
        f"{candidates[0]}: no such file (nor {candidates[1]}). {name} is {info.what}, from "
        f"{info.source}; it is licensed and not shipped with human3r-jax"
    )


def _load_smplx(path: Path, gender: str) -> SmplxModel:
    try:
        return load_smplx(path, num_betas=NUM_BETAS, num_expression=10, gender=gender)
    except SmplxError as e:  # its messages already start with the path
        raise BodyModelError(str(e)) from None


def load_body_models(root: str | Path, dataset: str) -> BodyModels:
    """The body models for `dataset` (one of DATASETS) from the folder `root`, reading only the files that
    dataset needs (`needed_files`). Every file is looked for before any is read, so that a missing one is
    reported at once. Raises BodyModelError naming the file at fault."""
    root = Path(root)
    names = needed_files(dataset)
    if not root.is_dir():
        raise BodyModelError(
            f"{root}: no such folder (the body models: smpl/ and smplx/ as fanegg/Human3R's "
            "scripts/fetch_smplx.sh lays them out)"
        )
    paths = {name: find_file(root, name) for name in names}
    smpl = {g: load_smpl(paths[f"SMPL_{g.upper()}.pkl"]) for g in GENDERS if f"SMPL_{g.upper()}.pkl" in paths}
    gendered = [g for g in ("male", "female") if f"SMPLX_{g.upper()}.npz" in paths]
    if dataset == "3dpw":
        regressor = load_h36m_regressor(paths["J_regressor_h36m.npy"])[list(H36M_TO_LSP14)]
        pelvis = (2, 3)
    else:
        regressor = smpl["neutral"].J_regressor[:NUM_JOINTS].astype(np.float32)  # the official float32 buffer
        pelvis = (1, 2)
    return BodyModels(
        smplx_neutral=_load_smplx(paths["SMPLX_NEUTRAL.npz"], "neutral"),
        smplx2smpl=load_smplx2smpl(paths["smplx2smpl.pkl"]),
        smpl=smpl,
        smplx_gendered={g: _load_smplx(paths[f"SMPLX_{g.upper()}.npz"], g) for g in gendered},
        hands_mean={g: read_hands_mean(paths[f"SMPLX_{g.upper()}.npz"]) for g in gendered},
        regressor=regressor,
        pelvis=pelvis,
    )
