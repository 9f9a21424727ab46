"""Training losses against hand-computed cases and a loop-by-loop NumPy transcription of the
official formulas (spec §6)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from human3r_jax.models.smplx import load_smplx, smplx_forward
from human3r_jax.train import losses as L
from human3r_jax.train.targets import human_targets, smpl_rotations

F = np.float32


def test_masked_mean_counts_only_selected_and_empty_is_zero():
    x = jnp.asarray([1.0, 2.0, 3.0, 10.0])
    assert float(L.masked_mean(x, jnp.asarray([True, True, True, False]))) == pytest.approx(2.0)
    assert float(L.masked_mean(x, jnp.zeros(4, bool))) == 0.0


def test_norm_factor_hand_case():
    # one sample, one view, 2 pixels: A valid at distance 3 (self) / 5 (cross), B invalid (far away).
    gt_self = jnp.asarray([[[[[3.0, 0, 0], [100.0, 0, 0]]]]])  # [B=1, V=1, H=1, W=2, 3]
    gt_cross = jnp.asarray([[[[[0, 4.0, 3.0], [0, 0, 100.0]]]]])
    valid = jnp.asarray([[[[True, False]]]])
    c_self = jnp.exp(jnp.asarray([[[[2.0, 9.0]]]]))  # weights log c = 2 and 1
    c_cross = jnp.exp(jnp.asarray([[[[1.0, 9.0]]]]))
    f = L.norm_factor(gt_self, gt_cross, valid, c_self, c_cross)
    assert float(f[0]) == pytest.approx((2 * 3 + 1 * 5) / (2 + 1 + 1e-8), rel=1e-6)
    # log-confidence floored at 1e-3 (conf = 1 gives log 0), and the factor floored at 1e-3
    f = L.norm_factor(gt_self * 1e-5, gt_cross * 1e-5, valid, jnp.ones_like(c_self), jnp.ones_like(c_cross))
    assert float(f[0]) == pytest.approx(1e-3)


def test_focal_loss_hand_cases():
    pred = jnp.asarray([[[0.5, 0.2], [0.1, 0.9]]])
    gt = jnp.asarray([[[1.0, 0.0], [0.0, 0.0]]])
    pos = math.log(0.5 + 1e-7) * 0.25
    neg = math.log(0.8 + 1e-7) * 0.04 + math.log(0.9 + 1e-7) * 0.01 + math.log(0.1 + 1e-7) * 0.81
    sel = jnp.asarray([True])
    assert float(L.focal_loss(pred, gt, sel)) == pytest.approx(-(pos + neg) / 1, rel=1e-5)
    # no positive cell: −Σ neg (not divided)
    assert float(L.focal_loss(pred, jnp.zeros_like(gt), sel)) == pytest.approx(
        -(neg + math.log(0.5 + 1e-7) * 0.25), rel=1e-5
    )
    # unselected maps do not count
    assert float(L.focal_loss(pred, gt, jnp.asarray([False]))) == 0.0


def test_bce_hand_case_and_log_floor():
    pred = jnp.asarray([[0.8, 0.3]])
    gt = jnp.asarray([[1.0, 0.0]])
    want = -(math.log(0.8) + math.log(0.7)) / 2
    assert float(L.bce(pred, gt, jnp.asarray([True]))) == pytest.approx(want, rel=1e-6)
    assert float(L.bce(jnp.asarray([[0.0]]), jnp.asarray([[1.0]]), jnp.asarray([True]))) == pytest.approx(100.0)


def test_pose_loss_hand_case():
    pred = jnp.zeros((1, 2, 7)).at[:, :, 3].set(1.0).at[0, 1, :3].set(jnp.asarray([2.0, 0, 0]))
    gt_t = jnp.zeros((1, 2, 3)).at[0, 1].set(jnp.asarray([0.0, 0, 0]))
    gt_q = jnp.zeros((1, 2, 4)).at[:, :, 0].set(1.0).at[0, 1].set(jnp.asarray([0.0, 1, 0, 0]))
    f = jnp.asarray([2.0])
    got = L.pose_loss(pred, gt_t, gt_q, f, jnp.asarray([True]))
    # translations /f: view 1 error 1 → mean over views 0.5; quaternion error view 1 √2 → 0.707
    assert float(got) == pytest.approx(0.5 + math.sqrt(2) / 2, rel=1e-6)
    assert float(L.pose_loss(pred, gt_t, gt_q, jnp.asarray([1e-3]), jnp.asarray([True]))) == 0.0


def official_pointmap_loss(pred, gt_self, gt_cross, valid, gt_t, gt_q, alpha):
    """Spec §6 / ConfLoss(Regr3DPoseBatchList) written loop by loop in NumPy (float64)."""
    b, v = valid.shape[:2]
    pts = []
    for i in range(b):
        p, w = [], []
        for j in range(v):
            m = valid[i, j]
            for gt, c in ((gt_self, pred["conf_self"]), (gt_cross, pred["conf"])):
                p.append(np.linalg.norm(gt[i, j][m], axis=-1))
                w.append(np.clip(np.log(c[i, j][m]), 1e-3, None))
        p, w = np.concatenate(p), np.concatenate(w)
        pts.append(max((w * p).sum() / (w.sum() + 1e-8), 1e-3))
    f = np.asarray(pts)
    terms = []
    for key_p, key_c, gt in (("pts3d_in_self_view", "conf_self", gt_self), ("pts3d_in_other_view", "conf", gt_cross)):
        for j in range(v):
            vals = []
            for i in range(b):
                m = valid[i, j]
                err = np.linalg.norm(pred[key_p][i, j][m] / f[i] - gt[i, j][m] / f[i], axis=-1)
                c = pred[key_c][i, j][m]
                vals.append(err * c - alpha * np.log(c))
            vals = np.concatenate(vals)
            terms.append(vals.mean() if vals.size else 0.0)
    t = np.linalg.norm(pred["camera_pose"][..., :3] / f[:, None, None] - gt_t / f[:, None, None], axis=-1)
    q = np.linalg.norm(pred["camera_pose"][..., 3:] - gt_q, axis=-1)
    return 2 * np.mean(terms) + t.mean() + q.mean()


def test_pointmap_loss_matches_the_official_formula():
    r = np.random.default_rng(0)
    b, v, h, w = 2, 3, 4, 5
    valid = r.uniform(size=(b, v, h, w)) > 0.3
    valid[1, 2] = False  # a view with no valid pixel in one sample
    pred = {
        "pts3d_in_self_view": r.normal(size=(b, v, h, w, 3)),
        "pts3d_in_other_view": r.normal(size=(b, v, h, w, 3)),
        "conf_self": 1 + r.exponential(size=(b, v, h, w)),
        "conf": 1 + r.exponential(size=(b, v, h, w)),
        "camera_pose": r.normal(size=(b, v, 7)),
    }
    gt_self, gt_cross = r.normal(size=(b, v, h, w, 3)) * 3, r.normal(size=(b, v, h, w, 3)) * 3
    gt_t, gt_q = r.normal(size=(b, v, 3)), r.normal(size=(b, v, 4))
    want = official_pointmap_loss(pred, gt_self, gt_cross, valid, gt_t, gt_q, 0.2)
    tgt = {"pts_self": gt_self, "pts_cross": gt_cross, "pose_t": gt_t, "pose_q": gt_q}
    as32 = lambda d: {k: jnp.asarray(x, jnp.float32) for k, x in d.items()}
    got, _ = L.pointmap_loss(as32(pred), as32(tgt), jnp.asarray(valid), jnp.ones((b, v), bool), 0.2)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_rgb_loss_is_mse():
    a, b = jnp.zeros((1, 2, 2, 2, 3)), jnp.full((1, 2, 2, 2, 3), 0.5)
    assert float(L.rgb_loss(a, b)) == pytest.approx(0.25)


# ---------------------------------------------------------------- SMPL terms on exact bodies


@pytest.fixture(scope="module")
def body_model(smplx_root):
    return load_smplx(smplx_root, num_betas=11)


def _gt_batch(b=1, v=2, m=2, seed=0):
    r = np.random.default_rng(seed)
    n = (b, v, m)
    batch = {
        "img": np.zeros((b, v, 48, 64, 3), F),
        "human_mask": np.zeros((b, v, 48, 64), F),
        "K": np.broadcast_to(np.array([[60, 0, 32], [0, 60, 24], [0, 0, 1]], F), (b, v, 3, 3)).copy(),
        "smpl_mask": np.zeros(n, bool),
        "smpl_root_pose": np.concatenate([np.full(n + (1,), np.pi, F), r.normal(0, 0.1, n + (2,)).astype(F)], -1),
        "smpl_body_pose": r.normal(0, 0.1, n + (21, 3)).astype(F),
        "smpl_jaw_pose": r.normal(0, 0.1, n + (3,)).astype(F),
        "smpl_leye_pose": np.zeros(n + (3,), F),
        "smpl_reye_pose": np.zeros(n + (3,), F),
        "smpl_left_hand_pose": r.normal(0, 0.1, n + (15, 3)).astype(F),
        "smpl_right_hand_pose": r.normal(0, 0.1, n + (15, 3)).astype(F),
        "smpl_betas": np.concatenate([r.normal(0, 0.5, n + (10,)), np.zeros(n + (1,))], -1).astype(F),
        "smpl_transl": np.stack(
            [np.linspace(-1, 1, m)[None, None].repeat(v, 1).repeat(b, 0), np.zeros(n), np.full(n, 4.0)], -1
        ).astype(F),
    }
    batch["smpl_mask"][:, 0] = True  # humans in view 0 only: view 1 is empty and still counts in the average
    return {k: jnp.asarray(x) for k, x in batch.items()}


def _exact_predictions(batch, tgt, dz: float):
    b, v, m = batch["smpl_mask"].shape
    _, rot53 = smpl_rotations(batch)
    g = tgt["score_map"].shape[-1]
    return {
        "smpl_rotmat": rot53,
        "smpl_shape": batch["smpl_betas"][..., :10],
        "smpl_expression": jnp.zeros((b, v, m, 10)),
        "smpl_transl": tgt["smpl_transl"] + jnp.asarray([0.0, 0.0, dz]),
        "smpl_scores": jnp.full((b, v, g, g), 0.5),
        "msk": jnp.full((b, v, 112, 112, 1), 0.5),
    }


def test_smpl_losses_on_exact_bodies_and_the_2d_gate(body_model):
    batch = _gt_batch()
    tgt = human_targets(body_model, batch, img_res=112, patch=14)
    assert np.asarray(tgt["smpl_mask"]).tolist() == [[[True, True], [False, False]]]
    for dz, gated in ((0.0, True), (1.5, True), (4.5, True), (7.5, False)):
        pred = _exact_predictions(batch, tgt, dz)
        total, t = L.smpl_loss(body_model, pred, {**tgt, "K": batch["K"]}, jnp.ones((1, 2), bool), (48, 64))
        t = {k: float(x) for k, x in t.items()}
        # the predicted body equals the GT body up to the translation: relative terms vanish
        for k in ("rotmat", "shape", "j3d", "v3d"):
            assert t[k] < 1e-5, (k, t[k])
        # L1 over xyz of a dz shift: dz/3 in view 0, 0 in the empty view 1 → averaged: dz/6
        for k in ("transl", "cj3d", "cv3d"):
            assert t[k] == pytest.approx(dz / 6, abs=2e-5), (k, t[k])
        assert t["msk"] == pytest.approx(math.log(2), rel=1e-5)
        want = (
            0.1 * t["scores"]
            + t["msk"]
            + t["rotmat"]
            + 0.1 * t["shape"]
            + t["transl"]
            + t["j3d"]
            + t["v3d"]
            + t["cj3d"]
            + t["cv3d"]
            + (0.01 * (t["j2d"] + t["v2d"]) if gated else 0.0)
        )
        assert float(total) == pytest.approx(want, rel=1e-5)
        if dz:
            assert t["j2d"] > 0.1 and t["v2d"] > 0.1


def test_gt_bodies_are_the_smplx_forward(body_model):
    batch = _gt_batch()
    tgt = human_targets(body_model, batch, img_res=112, patch=14)
    rot55, _ = smpl_rotations(batch)
    body = smplx_forward(body_model, batch["smpl_betas"][0, 0], jnp.zeros((2, 10)), rot55[0, 0])
    np.testing.assert_allclose(
        np.asarray(tgt["smpl_v3d"][0, 0]), np.asarray(body.vertices + batch["smpl_transl"][0, 0, :, None]), atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(tgt["smpl_transl"][0, 0]), np.asarray(tgt["smpl_j3d"][0, 0, :, 15]))


# ---------------------------------------------------------------- the official test criterion


def test_lower_median_and_group_scale_are_torch_nanmedian():
    """lower_median ≡ torch.nanmedian (the lower middle value of an even count); group_scale ≡ the
    official get_group_pointcloud_center_scale, transcribed with torch."""
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(1)
    x = r.normal(size=(4, 7)).astype(F)
    keep = r.uniform(size=(4, 7)) > 0.4
    keep[0] = [True, True, False, True, False, False, False]  # 3 kept: odd
    keep[1] = [True, True, True, True, False, False, False]  # 4 kept: even
    keep[2] = False  # none: NaN
    got = np.asarray(L.lower_median(jnp.asarray(x), jnp.asarray(keep), axis=1))
    want = torch.nanmedian(torch.from_numpy(np.where(keep, x, np.nan)), dim=1).values.numpy()
    np.testing.assert_array_equal(got, want)

    pts = r.normal(size=(2, 3, 4, 5, 3)).astype(F) * 3
    valid = r.uniform(size=(2, 3, 4, 5)) > 0.3
    tp = torch.from_numpy(np.where(valid[..., None], pts, np.nan)).reshape(2, -1, 3)
    centre = torch.nanmedian(tp, dim=1, keepdim=True).values
    want = torch.nanmedian((tp - centre).norm(dim=-1), dim=1).values.numpy()
    np.testing.assert_allclose(np.asarray(L.group_scale(jnp.asarray(pts), jnp.asarray(valid))), want, rtol=1e-6)


def test_eval_loss_hand_cases(body_model):
    """Regression terms summed (not averaged) over the 2V view terms; the scale-invariant copy
    vanishes for a prediction that is the GT scaled; RGB as the per-pixel L2 norm; SMPL as training."""
    batch = _gt_batch()  # B=1, V=2, 48×64
    tgt = human_targets(body_model, batch, img_res=112, patch=14)
    pred = _exact_predictions(batch, tgt, 1.5)
    r = np.random.default_rng(2)
    shape = (1, 2, 48, 64)
    valid = r.uniform(size=shape) > 0.2
    gt_self = r.normal(size=shape + (3,)).astype(F) + [0, 0, 5]
    gt_cross = r.normal(size=shape + (3,)).astype(F) + [0, 0, 5]
    img = r.uniform(-1, 1, size=shape + (3,)).astype(F)
    tgt = {**tgt, "pts_self": jnp.asarray(gt_self), "pts_cross": jnp.asarray(gt_cross)}
    batch = {**batch, "valid": jnp.asarray(valid), "img": jnp.asarray(img), "img_mask": jnp.ones((1, 2), bool)}
    smpl, _ = L.smpl_loss(body_model, pred, {**tgt, "K": batch["K"]}, batch["img_mask"], (48, 64))

    # offsets of norm 5 (self) and 2 (cross) at every pixel; rgb off by a vector of norm 0.5
    pred.update(
        {
            "pts3d_in_self_view": jnp.asarray(gt_self + [3, 4, 0]),
            "pts3d_in_other_view": jnp.asarray(gt_cross + [0, 0, 2]),
            "rgb": jnp.asarray(img + [0, 0.3, 0.4]),
        }
    )
    total, d = L.eval_loss(body_model, pred, tgt, batch)
    assert float(d["loss_regr"]) == pytest.approx(2 * 5 + 2 * 2, rel=1e-5)
    assert float(d["loss_rgb"]) == pytest.approx(0.5, rel=1e-5)
    assert float(d["loss_regr_scale_inv"]) > 0.1
    assert float(total) == pytest.approx(
        float(d["loss_regr"] + d["loss_regr_scale_inv"] + d["loss_rgb"] + smpl), rel=1e-6
    )

    # the GT scaled by 2.5: the metric term sees it, the scale-invariant one does not
    pred.update({"pts3d_in_self_view": jnp.asarray(gt_self * 2.5), "pts3d_in_other_view": jnp.asarray(gt_cross * 2.5)})
    _, d = L.eval_loss(body_model, pred, tgt, batch)
    assert float(d["loss_regr"]) > 1.0 and float(d["loss_regr_scale_inv"]) < 1e-5
