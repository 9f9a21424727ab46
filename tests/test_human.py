"""Human3R's human branch: detection slots, NMS, 6-D rotations, invisible empty slots, overflow."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_DINO, rel_l2, shared_path

from human3r_jax import checkpoint as ckpt
from human3r_jax import runtime
from human3r_jax.geometry import rotmat_to_rotvec
from human3r_jax.models import state_update as su
from human3r_jax.models.cut3r import Frame, StepOptions
from human3r_jax.models.human import nms3x3, rot6d_to_rotmat, select_slots

torch = pytest.importorskip("torch")


def test_select_slots_raster_order_and_overflow():
    s = np.zeros((1, 4, 4), np.float32)
    s[0, 0, 3], s[0, 1, 1], s[0, 2, 0], s[0, 3, 3] = 0.5, 0.9, 0.31, 0.7
    idx, valid, n = select_slots(jnp.asarray(s), 0.3, 6)
    assert int(n[0]) == 4 and valid[0].tolist() == [True] * 4 + [False] * 2
    assert idx[0, :4].tolist() == [3, 5, 8, 15]  # raster order, as the official enumeration
    idx, valid, n = select_slots(jnp.asarray(s), 0.3, 2)  # more detections than slots
    assert int(n[0]) == 4 and valid[0].all()
    assert idx[0].tolist() == [5, 15]  # the two highest scores, still in raster order
    idx, valid, n = select_slots(jnp.zeros((2, 4, 4)), 0.3, 3)
    assert not valid.any() and n.tolist() == [0, 0]


def test_nms_equals_torch_max_pool():
    x = np.random.default_rng(0).uniform(size=(2, 9, 7)).astype(np.float32)
    x[0, 2, 2] = x[0, 2, 3] = 2.0  # a plateau keeps both, as `hmax == heat` does
    t = torch.from_numpy(x)[:, None]
    hmax = torch.nn.functional.max_pool2d(t, 3, stride=1, padding=1)
    ref = (t * (hmax == t).float())[:, 0].numpy()
    np.testing.assert_array_equal(np.asarray(nms3x3(jnp.asarray(x))), ref)


def test_rot6d_convention():
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    r = np.asarray(rot6d_to_rotmat(jnp.asarray(x)))
    for xi, ri in zip(x, r):
        a1, a2 = xi[[0, 2, 4]], xi[[1, 3, 5]]  # row-major 3×2: columns (x0, x2, x4), (x1, x3, x5)
        b1 = a1 / np.linalg.norm(a1)
        b2 = a2 - (b1 @ a2) * b1
        b2 /= np.linalg.norm(b2)
        np.testing.assert_allclose(ri, np.stack([b1, b2, np.cross(b1, b2)], axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(r), 1, atol=1e-5)


def test_rotmat_to_rotvec_round_trip_including_near_pi():
    rng = np.random.default_rng(2)
    axes = rng.normal(size=(64, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 58), [0.0, 1e-8, np.pi - 1e-4, np.pi - 1e-3, 1e-3, 2.0]])
    vecs = axes * angles[:, None]
    k = np.zeros((64, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    k = k - k.transpose(0, 2, 1)
    mats = np.eye(3) + np.sin(angles)[:, None, None] * k + (1 - np.cos(angles))[:, None, None] * (k @ k)
    out = np.asarray(rotmat_to_rotvec(jnp.asarray(mats, jnp.float32)))
    np.testing.assert_allclose(out, vecs, atol=2e-3)  # float32 near π: the axis is ill-conditioned
    np.testing.assert_allclose(out[:58], vecs[:58], atol=2e-5)


@pytest.fixture(scope="module")
def fixture_model():
    from human3r_jax.converters.convert import convert_file

    root = shared_path("fixtures", "human3r_tiny")
    cfg, params, _ = convert_file(root / "checkpoint.pth", TINY_DINO)
    inputs = dict(np.load(root / "inputs.npz"))
    return cfg, params, inputs


def _run(fixture_model, slots, views=slice(0, 3)):
    cfg, params, inputs = fixture_model
    cfg = dataclasses.replace(cfg, max_humans=slots)
    graphdef, state = ckpt.params_into(ckpt.abstract_model(cfg), params)
    img = jnp.asarray(inputs["img"][views].transpose(0, 2, 3, 1)[:, None])
    v = img.shape[0]
    frames = Frame(img, jnp.ones((v, 1), bool), jnp.zeros((v, 1), bool))
    _, out = runtime.run_sequence(
        graphdef, state, runtime.init_carry(graphdef, state, 1), frames, StepOptions(state_update=su.ttt3r)
    )
    return jax.tree.map(lambda a: np.asarray(a)[:, 0], out)


def test_empty_slots_are_invisible(fixture_model):
    """Two or six slots: the same results for the detected humans and for the scene."""
    small, large = _run(fixture_model, 2), _run(fixture_model, 6)
    assert small["n_humans"].tolist() == large["n_humans"].tolist() == [2, 0, 1]
    for k in ("pts3d_in_self_view", "conf_self", "camera_pose", "pts3d_in_other_view", "msk"):
        assert rel_l2(large[k], small[k]) < 1e-5, k
    v = small["smpl_valid"]
    for k in ("smpl_rotmat", "smpl_shape", "smpl_transl", "smpl_expression", "smpl_loc"):
        assert rel_l2(large[k][:, :2][v], small[k][v]) < 1e-5, k
    np.testing.assert_array_equal(large["smpl_id"][:, :2][v], small["smpl_id"][v])


def test_more_humans_than_slots_keeps_the_best(fixture_model):
    one, two = _run(fixture_model, 1, slice(0, 1)), _run(fixture_model, 2, slice(0, 1))
    assert one["n_detected"].tolist() == [2] and one["n_humans"].tolist() == [1]  # says it dropped one
    scores = two["smpl_scores"][0, ..., 0].ravel()
    cells = [int(np.argmin(np.abs(scores - s))) for s in np.sort(scores)[-2:]]
    best = cells[-1]
    g = int(np.sqrt(scores.size))
    loc = one["smpl_loc"][0, 0] / 14 - 0.5  # back to the grid (up to the sub-cell offset)
    assert (int(np.floor(loc[1] + 0.5)) * g + int(np.floor(loc[0] + 0.5))) == best
