"""Synthetic stand-ins for the licensed body-model files of the evaluation (nothing here comes from the real
models: a hand-written skeleton and seeded random numbers in the real files' containers, keys, shapes and
dtypes).

write_fake_smpl         SMPL_{NEUTRAL,MALE,FEMALE}.pkl as SMPL_python_v.1.1.0 ships them (pickle protocol 2,
                        float64 arrays, J_regressor a scipy.sparse csc_matrix), or with chumpy arrays (v1.0)
write_fake_smplx2smpl   smplx2smpl.pkl: {'matrix': dense float32 [6890, 10475]}, 3 nonzeros per row (~290 MB)
write_fake_h36m         J_regressor_h36m.npy [17, 6890]
write_fake_body_models  the official layout ROOT/smpl/…, ROOT/smplx/…
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

V, K, V_SMPLX = 6890, 24, 10475
N_FACES = 13776
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# T-pose joints (x = body-left, y = up, z = forward, metres), SMPL's order: pelvis, hips, spine1, knees, spine2,
# ankles, spine3, feet, neck, collars, head, shoulders, elbows, wrists, hands.
JOINTS = np.array(
    [
        (0.0, 0.0, 0.0),
        (0.06, -0.09, 0.0),
        (-0.06, -0.09, 0.0),
        (0.0, 0.11, -0.01),
        (0.10, -0.47, 0.0),
        (-0.10, -0.47, 0.0),
        (0.0, 0.24, 0.0),
        (0.09, -0.87, -0.03),
        (-0.09, -0.87, -0.03),
        (0.0, 0.29, 0.02),
        (0.11, -0.93, 0.09),
        (-0.11, -0.93, 0.09),
        (0.0, 0.51, -0.01),
        (0.07, 0.43, 0.0),
        (-0.07, 0.43, 0.0),
        (0.0, 0.60, 0.03),
        (0.17, 0.46, -0.01),
        (-0.17, 0.46, -0.01),
        (0.43, 0.44, -0.03),
        (-0.43, 0.44, -0.03),
        (0.68, 0.45, -0.02),
        (-0.68, 0.45, -0.02),
        (0.77, 0.45, -0.02),
        (-0.77, 0.45, -0.02),
    ]
)
_SCALE = {"neutral": 1.0, "male": 1.04, "female": 0.95}
_WIDTH = {"neutral": 1.0, "male": 0.95, "female": 1.1}  # hips and girth
_CHUMPY_KEYS = ("v_template", "shapedirs", "posedirs", "weights", "J")


def fake_smpl_arrays(gender: str, seed: int) -> dict:
    """The entries of a fake SMPL file: vertices scattered on cylinders around the 23 bones, skinned to the
    bone's two joints (rows summing to 1), a sparse 8-vertex regressor per joint."""
    rng = np.random.default_rng([seed, list(_SCALE).index(gender)])
    J = JOINTS * _SCALE[gender] * np.array([_WIDTH[gender], 1.0, 1.0]) + rng.normal(scale=0.003, size=(K, 3))
    bone = rng.integers(1, K, V)  # each vertex belongs to the bone (parent of b) → b
    a, b = J[np.array(PARENTS)[bone]], J[bone]
    t = rng.uniform(0, 1, V)
    axis = (b - a) / np.linalg.norm(b - a, axis=1, keepdims=True)
    u = np.cross(axis, np.where(np.abs(axis[:, 2:]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.cross(axis, u)
    angle = rng.uniform(0, 2 * np.pi, V)[:, None]
    radius = 0.05 * _WIDTH[gender] * rng.uniform(0.8, 1.0, V)[:, None]
    radial = radius * (np.cos(angle) * u + np.sin(angle) * w)
    v_template = a + t[:, None] * (b - a) + radial

    weights = np.zeros((V, K))
    weights[np.arange(V), np.array(PARENTS)[bone]] = 1 - 0.5 * t
    weights[np.arange(V), bone] += 0.5 * t

    reg = np.zeros((K, V))
    for k in range(K):
        near = np.argsort(np.linalg.norm(v_template - J[k], axis=1))[:8]
        reg[k, near] = rng.uniform(0.5, 1.0, 8)
    reg /= reg.sum(1, keepdims=True)

    shapedirs = np.empty((V, 3, 10))
    shapedirs[:, :, 0] = v_template * 0.05  # stature
    shapedirs[:, :, 1] = radial * 0.3  # girth
    freq, phase = rng.normal(scale=2.0, size=(8, 3, 3)), rng.uniform(0, 2 * np.pi, (8, 3))
    shapedirs[:, :, 2:] = 0.01 * np.sin(np.einsum("vi,cij->vjc", v_template, freq) + phase.T)
    kintree = np.array([PARENTS, range(K)], np.int64)
    kintree[0, 0] = 4294967295  # uint32(-1), as in the official files
    faces = (np.arange(N_FACES)[:, None] + np.array([0, 1, 2])) % V
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": rng.normal(scale=2e-3, size=(V, 3, (K - 1) * 9)),
        "J_regressor": scipy.sparse.csc_matrix(reg),
        "weights": weights,
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
        "J": reg @ v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def _fake_chumpy(arrays: dict, keys) -> tuple[dict, dict]:
    """`arrays` with `keys` wrapped in instances of a class named chumpy.ch.Ch (what the v1.0 files hold), and
    the sys.modules entries that let pickle name it, chumpy itself not being installed."""
    ch = types.ModuleType("chumpy.ch")
    ch.Ch = type("Ch", (), {"__module__": "chumpy.ch"})
    pkg = types.ModuleType("chumpy")
    pkg.ch = ch
    wrapped = dict(arrays)
    for k in keys:
        wrapped[k] = ch.Ch()
        wrapped[k].__dict__.update(x=arrays[k], _dirty_vars=set(), _depends_on_deps={})
    return wrapped, {"chumpy": pkg, "chumpy.ch": ch}


def write_fake_smpl(path, gender: str, seed: int = 0, chumpy: bool = False) -> dict:
    """A fake SMPL_<GENDER>.pkl (chumpy: its float arrays as chumpy objects, as in v1.0) → its entries."""
    arrays = fake_smpl_arrays(gender, seed)
    data, modules = _fake_chumpy(arrays, _CHUMPY_KEYS) if chumpy else (arrays, {})
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=2)
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
    return arrays


def write_fake_smplx2smpl(path, seed: int = 0) -> np.ndarray:
    """A fake smplx2smpl.pkl: each SMPL vertex a convex combination of 3 distinct SMPL-X vertices → the matrix."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, V_SMPLX - 200, V)
    cols = np.cumsum(np.stack([first, 1 + rng.integers(0, 90, V), 1 + rng.integers(0, 90, V)], 1), axis=1)
    m = np.zeros((V, V_SMPLX), np.float32)
    m[np.arange(V)[:, None], cols] = rng.dirichlet([2.0, 2.0, 2.0], V)
    with open(path, "wb") as f:
        pickle.dump({"matrix": m}, f, protocol=4)
    return m


def write_fake_h36m(path, seed: int = 0) -> np.ndarray:
    """A fake J_regressor_h36m.npy [17, 6890] float64: 20 random vertices per joint, rows summing to 1."""
    rng = np.random.default_rng(seed)
    reg = np.zeros((17, V))
    for j in range(17):
        reg[j, rng.choice(V, 20, replace=False)] = rng.uniform(0.1, 1.0, 20)
    reg /= reg.sum(1, keepdims=True)
    np.save(path, reg)
    return reg


def write_fake_body_models(root, smplx_neutral_npz, smplx2smpl=None, seed: int = 0) -> Path:
    """ROOT/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl, ROOT/smpl/J_regressor_h36m.npy, ROOT/smplx/SMPLX_{NEUTRAL,MALE,
    FEMALE}.npz (links to the given neutral file) and ROOT/smplx/smplx2smpl.pkl (a link to `smplx2smpl` when
    given: writing one takes ~290 MB) → ROOT."""
    root = Path(root)
    (root / "smpl").mkdir(parents=True, exist_ok=True)
    (root / "smplx").mkdir(exist_ok=True)
    for gender in ("neutral", "male", "female"):
        write_fake_smpl(root / "smpl" / f"SMPL_{gender.upper()}.pkl", gender, seed)
        os.symlink(Path(smplx_neutral_npz).resolve(), root / "smplx" / f"SMPLX_{gender.upper()}.npz")
    write_fake_h36m(root / "smpl" / "J_regressor_h36m.npy", seed)
    if smplx2smpl is None:
        write_fake_smplx2smpl(root / "smplx" / "smplx2smpl.pkl", seed)
    else:
        os.symlink(Path(smplx2smpl).resolve(), root / "smplx" / "smplx2smpl.pkl")
    return root
