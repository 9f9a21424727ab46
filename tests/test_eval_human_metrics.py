"""Human-mesh metrics (human3r_jax.evaluation.human_metrics): hand-computed cases, and a comparison with the
official Human3R ``eval/global_human/utils.py`` functions that runs only when HUMAN3R_OFFICIAL_HUMAN3R points to a
Human3R checkout."""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import itertools
import math
import os
import sys
import types

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from human3r_jax.evaluation import human_metrics as H

OFFICIAL = os.environ.get("HUMAN3R_OFFICIAL_HUMAN3R")

SQUARE = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])  # 4 "joints", box 101 × 101 px


def _rot(seed):
    return Rotation.random(random_state=seed).as_matrix()


# ----------------------------------------------------------------------------------------------------------------
# Boxes, matching, P/R/F1


def test_bbox_iou_known_boxes():
    p = np.array([[0.0, 0.0], [9.0, 9.0], [3.0, 4.0]])  # box [0, 9]² → 10 × 10 px with the +1 convention
    g = np.array([[5.0, 5.0], [14.0, 14.0]])  # box [5, 14]² → overlap [5, 9]² = 5 × 5 px
    assert H.bbox_iou(p, g) == pytest.approx(25 / 175, rel=1e-15)
    assert H.bbox_iou(p, p) == 1.0
    assert H.bbox_iou(p, p + 100) == 0.0
    # Touching edges still overlap by one pixel column under the +1 convention.
    assert H.bbox_iou(p, p + [9.0, 0.0]) == pytest.approx(10 / 190)


def test_bbox_iou_degenerate_or_nonfinite_is_zero():
    flat = np.array([[0.0, 5.0], [10.0, 5.0]])  # zero height (the official code asserts here)
    point = np.zeros((24, 2))  # all joints projected to one pixel (predicted focal 0)
    assert H.bbox_iou(flat, SQUARE) == 0.0
    assert H.bbox_iou(SQUARE, point) == 0.0
    assert H.bbox_iou(SQUARE, np.where(SQUARE > 50, np.nan, SQUARE)) == 0.0
    assert H.bbox_iou(SQUARE, np.full((4, 2), np.inf)) == 0.0


def test_greedy_order_beats_optimal_assignment():
    # Costs: (p0,g0)=10 < (p1,g0)=40 < (p0,g1)=70 < (p1,g1)=120 (offsets ×2 = spectral norm of a constant shift
    # over 4 joints). Greedy takes (p0,g0) first, skips the two pairs with a taken side (IoU ≥ 0.05) and ends
    # with (p1,g1), although (p0,g1)+(p1,g0) = 110 would be cheaper in total.
    gt = np.stack([SQUARE, SQUARE + [40.0, 0.0]])
    pred = np.stack([SQUARE + [5.0, 0.0], SQUARE + [-20.0, 0.0]])
    matches, fp, miss = H.match_2d_greedy(pred, gt)
    assert matches.dtype == np.int64
    np.testing.assert_array_equal(matches, [[0, 0], [1, 1]])
    assert fp == [] and miss == []
    # Matches come in acceptance order, not sorted by pred: here (p1, g0) = 4 is accepted before (p0, g1) = 10.
    matches, _, _ = H.match_2d_greedy(
        np.stack([SQUARE + [5.0, 0.0], SQUARE + [38.0, 0.0]]), np.stack([SQUARE + [40.0, 0.0], SQUARE])
    )
    np.testing.assert_array_equal(matches, [[1, 0], [0, 1]])


def test_ties_take_first_pred_major_pair():
    gt = np.stack([SQUARE, SQUARE + [20.0, 0.0]])
    pred = np.stack([SQUARE + [10.0, 0.0], SQUARE + [10.0, 0.0]])  # all four costs equal
    np.testing.assert_array_equal(H.match_2d_greedy(pred, gt)[0], [[0, 0], [1, 1]])
    # The prediction may carry more joints than the GT: only the first J are used.
    extra = np.concatenate([pred, np.full((2, 3, 2), 1e4)], axis=1)
    np.testing.assert_array_equal(H.match_2d_greedy(extra, gt)[0], [[0, 0], [1, 1]])


def test_false_positive_counter_ends_the_loop():
    # p0 = g0 exactly. Next cheapest pair is (p0, g1) (cost 240) whose boxes do not overlap: the FP counter goes to
    # 1 and the round ends; 1 match + 1 FP = 2 preds, so the loop stops and p1 — a valid match for g1 (IoU 0.45,
    # cost 250) — is never considered: one false positive and one miss.
    g1 = SQUARE + [120.0, 0.0]
    p1 = g1.mean(0) + 1.5 * (SQUARE[::-1] - SQUARE.mean(0))
    pred, gt = np.stack([SQUARE, p1]), np.stack([SQUARE, g1])
    assert np.linalg.norm(SQUARE - g1, 2) < np.linalg.norm(p1 - g1, 2) < np.linalg.norm(p1 - SQUARE, 2)
    assert H.bbox_iou(SQUARE, g1) < 0.05 <= H.bbox_iou(p1, g1)
    matches, fp, miss = H.match_2d_greedy(pred, gt)
    np.testing.assert_array_equal(matches, [[0, 0]])
    assert fp == [1] and miss == [1]
    # Without the far GT pair being cheaper (g1 alone), p1 matches.
    np.testing.assert_array_equal(H.match_2d_greedy(pred[1:], gt[1:])[0], [[0, 0]])


def test_far_prediction_is_false_positive_and_empty_sides():
    pred = np.stack([SQUARE + 1000.0, SQUARE + 2.0])
    matches, fp, miss = H.match_2d_greedy(pred, SQUARE[None])
    np.testing.assert_array_equal(matches, [[1, 0]])
    assert fp == [0] and miss == []
    m, fp, miss = H.match_2d_greedy(np.zeros((0, 24, 2)), np.stack([SQUARE, SQUARE]))
    assert m.shape == (0, 2) and fp == [] and miss == [0, 1]
    m, fp, miss = H.match_2d_greedy(pred, np.zeros((0, 4, 2)))
    assert m.shape == (0, 2) and fp == [0, 1] and miss == []
    # A collapsed prediction (focal 0) or a NaN one cannot match; the official code would abort here.
    bad = np.stack([np.zeros((4, 2)), np.full((4, 2), np.nan)])
    m, fp, miss = H.match_2d_greedy(bad, SQUARE[None])
    assert m.shape == (0, 2) and fp == [0, 1] and miss == [0]


def test_prf1_rounding():
    assert H.prf1(10, 3, 2) == (78.0, 70.0, 74.0)  # P 7/9, R 7/10, F1 7/9.5
    p, r, _ = H.prf1(4, 0, 3)  # P = 4/7 → 0.57 → 100·0.57 = 56.99999999999999 (not 57.0)
    assert p == 100.0 * 0.57 and p != 57.0 and r == 100.0
    assert H.prf1(1, 0, 7)[0] == 12.0  # 1/8 = 0.125 → round half to even → 0.12
    assert H.prf1(0, 0, 5) == (0.0, 0.0, 0.0)
    assert H.prf1(3, 3, 1) == (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Alignments and camera-frame metrics


def _body(m, j, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=0.3, size=(m, j, 3)) + np.array([0.0, 0.0, 4.0])


def test_umeyama_recovers_sim3_and_rigid():
    x = np.random.default_rng(0).normal(size=(2, 50, 3))
    R, s, t = _rot(1), 1.7, np.array([0.3, -2.0, 5.0])
    y = s * x @ R.T + t
    s_hat, R_hat, t_hat = H.umeyama(y, x)
    assert s_hat.shape == (2, 1) and R_hat.shape == (2, 3, 3) and t_hat.shape == (2, 3)
    np.testing.assert_allclose(s_hat, s, rtol=1e-12)
    np.testing.assert_allclose(R_hat, np.broadcast_to(R, (2, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(t_hat, np.broadcast_to(t, (2, 3)), atol=1e-12)
    s1, R1, _ = H.umeyama(y[0] / s, x[0], fixed_scale=True)  # unbatched, rigid
    assert s1.shape == (1,) and s1[0] == 1.0
    np.testing.assert_allclose(R1, R, atol=1e-12)


def test_camcoord_known_translation():
    gj, gv = _body(3, 24, 0), _body(3, 6890, 1)
    shift = np.array([0.01, 0.0, 0.0])
    out = H.camcoord_metrics(gj + shift, gj, gv + shift, gv, (1, 2))
    assert set(out) == set(H.CAMCOORD_KEYS)
    for k in ("metric_mpjpe", "metric_pve", "root_error"):
        np.testing.assert_allclose(out[k], 10.0, rtol=1e-9)
    for k in ("mpjpe", "pve", "pa_mpjpe", "pa_pve"):
        np.testing.assert_allclose(out[k], 0.0, atol=1e-9)


def test_camcoord_known_joint_and_vertex_offsets():
    gj, gv = _body(2, 14, 2), _body(2, 6890, 3)
    pj = gj.copy()
    pj[:, 7] += [0.0, 0.028, 0.0]  # one non-pelvis joint moved 28 mm
    pv = gv + [0.0, 0.0, 0.002]  # vertices moved 2 mm; the pelvis (joint-based) does not move
    out = H.camcoord_metrics(pj, gj, pv, gv, (2, 3))
    np.testing.assert_allclose(out["mpjpe"], 28.0 / 14, rtol=1e-9)
    np.testing.assert_allclose(out["pve"], 2.0, rtol=1e-9)
    np.testing.assert_allclose(out["root_error"], 0.0, atol=1e-12)
    # Moving a hip moves the pelvis by half of it (LSP hips are joints 2 and 3).
    pj = gj.copy()
    pj[:, 2] += [0.02, 0.0, 0.0]
    out = H.camcoord_metrics(pj, gj, gv, gv, (2, 3))
    np.testing.assert_allclose(out["root_error"], 10.0, rtol=1e-9)
    np.testing.assert_allclose(out["pve"], 10.0, rtol=1e-9)  # every centred vertex is off by the pelvis shift


def test_pa_of_rotated_scaled_copy_is_zero_and_reflection_is_not():
    gj, gv = _body(2, 24, 4), _body(2, 500, 5)
    R, s, t = _rot(6), 0.8, np.array([1.0, -0.5, 2.0])
    out = H.camcoord_metrics(s * gj @ R.T + t, gj, s * gv @ R.T + t, gv, (1, 2))
    np.testing.assert_allclose(out["pa_mpjpe"], 0.0, atol=1e-9)
    np.testing.assert_allclose(out["pa_pve"], 0.0, atol=1e-9)
    assert (out["mpjpe"] > 10).all()
    mirror = np.diag([-1.0, 1.0, 1.0])  # a reflection cannot be undone by the rotation
    out = H.camcoord_metrics(gj @ mirror, gj, gv @ mirror, gv, (1, 2))
    assert (out["pa_mpjpe"] > 1).all() and (out["pa_pve"] > 1).all()


def test_camcoord_float32_and_empty():
    gj, gv = _body(2, 24, 7), _body(2, 6890, 8)
    pj, pv = gj + 0.01 * _body(2, 24, 9), gv + 0.01 * _body(2, 6890, 10)
    o64 = H.camcoord_metrics(pj, gj, pv, gv, (1, 2))
    o32 = H.camcoord_metrics(pj, gj, pv, gv, (1, 2), dtype=np.float32)
    for k in H.CAMCOORD_KEYS:
        assert o32[k].dtype == np.float32 and o64[k].dtype == np.float64
        np.testing.assert_allclose(o32[k], o64[k], rtol=1e-4, atol=1e-3)
    empty = H.camcoord_metrics(
        np.zeros((0, 24, 3)), np.zeros((0, 24, 3)), np.zeros((0, 10, 3)), np.zeros((0, 10, 3)), (1, 2)
    )
    assert all(v.shape == (0,) for v in empty.values())


# ----------------------------------------------------------------------------------------------------------------
# World-frame metrics


def _verts(n):
    return np.zeros((n, 6890, 3))


def test_windows_and_first_two_frame_alignment():
    # F = 250 → windows [0,100), [100,200), [200,250); each window's prediction is its own Sim(3) of the GT, so
    # both window metrics are 0 only if the windows are split exactly there.
    n = 250
    rng = np.random.default_rng(11)
    gj = np.cumsum(rng.normal(scale=0.05, size=(n, 1, 3)), axis=0) + rng.normal(scale=0.3, size=(n, 24, 3))
    pj = np.empty_like(gj)
    for w, (a, b) in enumerate([(0, 100), (100, 200), (200, 250)]):
        pj[a:b] = (1.0 + 0.2 * w) * gj[a:b] @ _rot(20 + w).T + [w, -w, 0.5]
    out = H.global_metrics(pj, gj, _verts(n), _verts(n))
    assert out["w_mpjpe"].shape == out["wa_mpjpe"].shape == (n,)
    np.testing.assert_allclose(out["w_mpjpe"], 0.0, atol=1e-8)
    np.testing.assert_allclose(out["wa_mpjpe"], 0.0, atol=1e-8)
    shifted = H.global_metrics(pj[1:], gj[1:], _verts(n - 1), _verts(n - 1))  # windows now straddle the changes
    assert shifted["wa_mpjpe"][:200].min() > 0.1 and shifted["wa_mpjpe"][200:].max() < 1e-8
    # W-MPJPE fits on the first two frames only: a different transform from frame 2 on is not absorbed.
    pj2 = gj[:100].copy()
    pj2[2:] += [0.0, 0.0, 0.05]
    out = H.global_metrics(pj2, gj[:100], _verts(100), _verts(100))
    np.testing.assert_allclose(out["w_mpjpe"][:2], 0.0, atol=1e-8)
    np.testing.assert_allclose(out["w_mpjpe"][2:], 50.0, rtol=1e-9)
    assert 0 < out["wa_mpjpe"].max() < 50.0


def test_rte_known_offset():
    # GT root on the unit square (path 3 m); the prediction leaves the plane by ±3 cm with zero mean and no
    # correlation with the GT, so the rigid fit is the identity and every frame is 3 cm off: 1 %.
    d = 0.03
    g_root = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    p_root = g_root + np.array([[0, 0, d], [0, 0, -d], [0, 0, d], [0, 0, -d]])
    gj = np.repeat(g_root[:, None], 24, axis=1) + np.random.default_rng(0).normal(size=(1, 24, 3))
    pj = gj + (p_root - g_root)[:, None]
    out = H.global_metrics(pj, gj, _verts(4), _verts(4))
    np.testing.assert_allclose(out["rte"], d / 3 * 100, rtol=1e-9)
    # Sim(3): s = trace(DS) / var = 0.5 / (0.5 + d²); error = √(2·(0.5(1 − s))² + (s d)²).
    s = 0.5 / (0.5 + d**2)
    np.testing.assert_allclose(
        out["rte_scaled"], math.sqrt(2 * (0.5 * (1 - s)) ** 2 + (s * d) ** 2) / 3 * 100, rtol=1e-9
    )
    # A rigidly moved prediction has zero rigid RTE; a scaled one only zero scaled RTE.
    R = _rot(3)
    out = H.global_metrics(2.0 * gj @ R.T + 1.0, gj, _verts(4), _verts(4))
    assert out["rte"].min() > 1.0
    np.testing.assert_allclose(out["rte_scaled"], 0.0, atol=1e-9)


def test_jitter_of_cubic_trajectory():
    a = 1e-4  # x = a t³ (t in frames): third difference 6a per frame³ → 6a · 30³ / 10 = 1.62
    t = np.arange(7.0)
    pj = np.zeros((7, 2, 3))
    pj[:, :, 0] = (a * t**3)[:, None]
    out = H.global_metrics(pj, pj, _verts(7), _verts(7))
    np.testing.assert_allclose(out["jitter"], 6 * a * 30**3 / 10, rtol=1e-9)
    assert out["jitter"].shape == (4,)
    assert H.global_metrics(pj, pj, _verts(7), _verts(7), fps=10.0)["jitter"][0] == pytest.approx(6 * a * 1e3 / 10)


def test_foot_sliding_known_motion():
    n = 4
    gv, pv = _verts(n), _verts(n)
    gv[2:, 3216, 1] = 0.02  # GT foot vertex 3216 lifts 2 cm between frames 1 and 2 (no contact there)
    gv[:, 100] = np.arange(n)[:, None]  # other vertices are ignored
    pv[:, list(H.FOOT_VERTICES), 0] = 0.005 * np.arange(n)[:, None]  # predicted feet slide 5 mm / frame
    out = H.global_metrics(np.zeros((n, 24, 3)), np.zeros((n, 24, 3)), pv, gv)
    assert out["foot_sliding"].shape == (3 * 4 - 1,)
    np.testing.assert_allclose(out["foot_sliding"], 5.0, rtol=1e-9)


def test_global_short_sequences_do_not_raise():
    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 3, 101):
        gj = np.cumsum(rng.normal(size=(n, 24, 3)), axis=0)
        out = H.global_metrics(gj + 0.01, gj, _verts(n), _verts(n))
        assert set(out) == set(H.GLOBAL_KEYS)
        assert out["w_mpjpe"].shape == out["wa_mpjpe"].shape == out["rte"].shape == (n,)
        assert out["jitter"].shape == (max(n - 3, 0),) and out["foot_sliding"].shape == (4 * max(n - 1, 0),)
        assert np.isfinite(out["w_mpjpe"]).all() and np.isfinite(out["wa_mpjpe"]).all()
        if n == 1:  # zero GT path length: RTE undefined
            assert np.isnan(out["rte"]).all() and np.isnan(out["rte_scaled"]).all()
        elif n:
            assert np.isfinite(out["rte"]).all()
    gj = np.zeros((5, 24, 3)) + np.arange(24.0)[:, None]  # motionless root
    assert np.isnan(H.global_metrics(gj, gj, _verts(5), _verts(5))["rte"]).all()


# ----------------------------------------------------------------------------------------------------------------
# Per-sequence line and summary


def test_sequence_metrics_rounds_like_percent_format():
    per = {k: [np.zeros(0)] for k in H.CAMCOORD_KEYS}
    per["mpjpe"] = [np.array([0.15]), np.array([0.15])]  # '%.1f' → 0.1 (np.round would give 0.2)
    per["pve"] = [np.array([0.35])]  # → 0.3 (np.round: 0.4)
    per["pa_mpjpe"] = [np.array([0.05])]  # 0.05 is stored slightly above → 0.1
    per["pa_pve"] = [np.array([2.25])]  # exact half → even → 2.2
    per["metric_pve"] = [np.array([2.675, 2.675])]  # → 2.7
    per["root_error"] = [np.array([1.0, 2.0]), np.array([6.0])]  # plain mean over instances: 3.0
    row = H.sequence_metrics({"n_human": 3, "count": 4, "miss": 0, "fp": 3}, per, None)
    assert row["mpjpe"] == 0.1 and row["pve"] == 0.3 and row["pa_mpjpe"] == 0.1
    assert row["pa_pve"] == 2.2 and row["metric_pve"] == 2.7 and row["root_error"] == 3.0
    assert row["metric_mpjpe"] == 0.0  # no instance
    assert all(row[k] == 0.0 for k in H.GLOBAL_KEYS)  # no global metrics (3DPW)
    assert (row["precision"], row["recall"], row["f1"]) == (57.0, 100.0, 73.0)  # F1 = 4/5.5 → 0.73
    assert (row["n_human"], row["count"], row["miss"], row["fp"]) == (3, 4, 0, 3)
    assert set(row) == {"n_human", "count", "miss", "fp", *H.SUMMARY_KEYS}

    glob = {k: np.zeros(0) for k in H.GLOBAL_KEYS}
    glob["rte"] = np.array([0.1, 0.2])  # mean 0.15000000000000002 → 0.2
    glob["jitter"] = np.array([12.25])
    row = H.sequence_metrics({}, {}, glob)
    assert row["rte"] == 0.2 and row["jitter"] == 12.2 and row["foot_sliding"] == 0.0 and row["n_human"] == 0


def test_aggregate_weighting():
    def row(n, v):
        return {"n_human": n, **dict.fromkeys(H.SUMMARY_KEYS, v)}

    bad = row(50, 1.0)
    bad["rte"] = float("nan")  # printed as "nan": the official parser drops the whole line
    out = H.aggregate([row(1, 10.0), row(3, 20.0), row(0, 99.0), bad])
    assert out["n_human"] == 4
    assert all(out[k] == 17.5 for k in H.SUMMARY_KEYS)
    assert H.aggregate([]) == {"n_human": 0, **dict.fromkeys(H.SUMMARY_KEYS, 0.0)}


# ----------------------------------------------------------------------------------------------------------------
# Official comparison (runs only with HUMAN3R_OFFICIAL_HUMAN3R set)


def load_official(checkout):
    """The official ``eval/global_human/utils.py`` as a module. Its imports that are missing here are stubbed,
    and ``eval.relpose.evo_utils`` (star-imported, unused by the metric functions) is an empty module."""
    path = os.path.join(checkout, "eval", "global_human", "utils.py")
    stubs = {}
    for name in ("cv2", "roma", "imageio", "tqdm", "matplotlib"):
        if importlib.util.find_spec(name) is None:
            stubs[name] = types.ModuleType(name)
    if "imageio" in stubs:
        stubs["imageio.v2"] = types.ModuleType("imageio.v2")
    if "matplotlib" in stubs:
        mpl = stubs["matplotlib"]
        for sub in ("cm", "pyplot", "backends", "backends.backend_agg", "figure"):
            stubs[f"matplotlib.{sub}"] = types.ModuleType(f"matplotlib.{sub}")
        stubs["matplotlib.backends.backend_agg"].FigureCanvasAgg = object
        stubs["matplotlib.figure"].Figure = object
        mpl.cm, mpl.pyplot = stubs["matplotlib.cm"], stubs["matplotlib.pyplot"]
    eval_pkg = types.ModuleType("eval")
    eval_pkg.__path__ = []
    relpose_pkg = types.ModuleType("eval.relpose")
    relpose_pkg.__path__ = []
    stubs.update(
        {
            "eval": eval_pkg,
            "eval.relpose": relpose_pkg,
            "eval.relpose.evo_utils": types.ModuleType("eval.relpose.evo_utils"),
        }
    )
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location("official_global_human_utils", path)
        utils = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(utils)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return utils


@pytest.fixture(scope="module")
def official():
    if not OFFICIAL:
        pytest.skip("set HUMAN3R_OFFICIAL_HUMAN3R to a Human3R checkout")
    pytest.importorskip("torch")
    return load_official(OFFICIAL)


@contextlib.contextmanager
def _torch_default(dtype):
    """The official functions build torch.eye / torch.ones in the default dtype; float64 inputs need float64."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _track(worst, precision, key, ours, theirs):
    """Keep the worst absolute and relative difference per (precision, metric); relative to max(|theirs|, 1e-3)
    so that values that are 0 up to rounding (e.g. a Sim(3) RTE on 2 frames) do not blow it up."""
    a, b = np.asarray(ours, np.float64).ravel(), np.asarray(theirs, np.float64).ravel()
    diff = np.abs(a - b)
    d_abs = float(diff.max()) if diff.size else 0.0
    d_rel = float((diff / np.maximum(np.abs(b), 1e-3)).max()) if diff.size else 0.0
    old = worst.get((precision, key), (0.0, 0.0))
    worst[(precision, key)] = (max(old[0], d_abs), max(old[1], d_rel))


def _random_frame(rng, n_pred, n_gt, j_pred, j_gt):
    """Random 2-D people: GT skeletons at random places; preds near some GT (noise), far away, or duplicated."""
    gt = rng.uniform(0, 500, size=(n_gt, 1, 2)) + rng.normal(scale=40, size=(n_gt, j_gt, 2))
    pred = rng.uniform(0, 500, size=(n_pred, 1, 2)) + rng.normal(scale=40, size=(n_pred, j_pred, 2))
    for i in range(n_pred):
        kind = rng.integers(4)
        if kind <= 1 and n_gt:  # noisy copy of a GT person
            g = gt[rng.integers(n_gt)]
            pred[i, :j_gt] = g + rng.normal(scale=rng.choice([2.0, 15.0, 60.0]), size=g.shape)
        elif kind == 2:  # far away
            pred[i] += 3000.0
        elif i:  # exact duplicate of the previous prediction: tied costs
            pred[i] = pred[i - 1]
    return pred, gt


def test_official_matching_and_prf1(official):
    rng = np.random.default_rng(0)
    n_frames = 0
    for _ in range(600):
        n_pred, n_gt = int(rng.integers(0, 5)), int(rng.integers(0, 4))
        j_gt = int(rng.choice([14, 24]))
        pred, gt = _random_frame(rng, n_pred, n_gt, 24, j_gt)
        ours = H.match_2d_greedy(pred, gt)
        theirs = official.match_2d_greedy(pred[:, :j_gt], gt, np.ones_like(gt[..., 0]).astype(np.bool_))
        np.testing.assert_array_equal(ours[0], np.asarray(theirs[0]).reshape(-1, 2))
        assert ours[1] == [int(i) for i in theirs[1]] and ours[2] == [int(i) for i in theirs[2]]
        n_frames += 1
    for count, miss, fp in itertools.product(range(12), range(12), range(12)):
        if miss <= count:
            assert H.prf1(count, miss, fp) == tuple(float(v) for v in official.compute_prf1(count, miss, fp))
    print(f"\nmatch_2d_greedy: {n_frames} random frames identical; prf1 identical")


def _camcoord_batch(rng, m, j):
    gj = rng.normal(scale=0.3, size=(m, j, 3)) + [0.0, 0.0, 4.0]
    gv = rng.normal(scale=0.3, size=(m, 6890, 3)) + [0.0, 0.0, 4.0]
    R, s = _rot(int(rng.integers(1000))), rng.uniform(0.8, 1.2)
    pj = s * gj @ R.T + rng.normal(scale=0.03, size=gj.shape) + rng.normal(scale=0.1, size=3)
    pv = s * gv @ R.T + rng.normal(scale=0.03, size=gv.shape) + rng.normal(scale=0.1, size=3)
    return pj, gj, pv, gv


def _global_batch(rng, n):
    moving = rng.random((n, 1, 1)) < 0.5  # the other frames stand still: foot contacts
    root = np.cumsum(moving * rng.normal(scale=0.03, size=(n, 1, 3)), axis=0)
    gj = root + rng.normal(scale=0.3, size=(1, 24, 3)) + rng.normal(scale=0.01, size=(n, 24, 3))
    gv = root + rng.normal(scale=0.3, size=(1, 6890, 3)) + rng.normal(scale=0.002, size=(n, 6890, 3))
    R, s = _rot(int(rng.integers(1000))), rng.uniform(0.8, 1.2)
    drift = np.cumsum(rng.normal(scale=0.01, size=(n, 1, 3)), axis=0)
    pj = s * gj @ R.T + drift + rng.normal(scale=0.02, size=gj.shape)
    pv = s * gv @ R.T + drift + rng.normal(scale=0.003, size=gv.shape)
    return pj, gj, pv, gv


CAM_NAMES = {
    "mpjpe": "ca_mpjpe",
    "pve": "ca_pve",
    "pa_mpjpe": "pa_mpjpe",
    "pa_pve": "pa_pve",
    "metric_mpjpe": "me_mpjpe",
    "metric_pve": "me_pve",
    "root_error": "rt_error",
}
GLOBAL_NAMES = {
    "w_mpjpe": "wa2_mpjpe",
    "wa_mpjpe": "waa_mpjpe",
    "rte": "rte",
    "rte_scaled": "rte_scaled",
    "jitter": "jitter",
    "foot_sliding": "fs",
}


def _official_camcoord(official, arrays, pelvis, dtype):
    import torch

    with _torch_default(dtype):
        batch = dict(
            zip(("pred_j3d", "target_j3d", "pred_v3d", "target_v3d"), (torch.from_numpy(a).to(dtype) for a in arrays))
        )
        return official.eval_camcoord(batch, list(pelvis))


def _official_global(official, arrays, dtype):
    import torch

    with _torch_default(dtype):
        batch = dict(
            zip(("pred_j3d", "target_j3d", "pred_v3d", "target_v3d"), (torch.from_numpy(a).to(dtype) for a in arrays))
        )
        return official.eval_global(batch)


def test_official_camcoord_global_and_summary(official, tmp_path):
    import torch

    rng = np.random.default_rng(1)
    worst = {}
    rows, official_results = [], []
    for seq, (m_per_frame, j, pelvis, n_global) in enumerate(
        [(1, 24, (1, 2), 1), (2, 14, (2, 3), 2), (3, 24, (1, 2), 5), (1, 24, (1, 2), 150), (1, 24, (1, 2), 250)]
    ):
        per_ours, per_theirs = {k: [] for k in CAM_NAMES}, {v: [] for v in CAM_NAMES.values()}
        for _frame in range(3):
            arrays = _camcoord_batch(rng, m_per_frame, j)
            ours = H.camcoord_metrics(*arrays, pelvis)
            ours32 = H.camcoord_metrics(*arrays, pelvis, dtype=np.float32)
            theirs = _official_camcoord(official, arrays, pelvis, torch.float64)
            theirs32 = _official_camcoord(official, arrays, pelvis, torch.float32)
            for k, name in CAM_NAMES.items():
                np.testing.assert_allclose(ours[k], theirs[name], rtol=1e-6, atol=1e-9, err_msg=k)
                np.testing.assert_allclose(ours32[k], theirs32[name], rtol=1e-3, atol=1e-3, err_msg=k)
                _track(worst, "f64", k, ours[k], theirs[name])
                _track(worst, "f32", k, ours32[k], theirs32[name])
                per_ours[k].append(ours[k])
                per_theirs[name].append(theirs[name])

        arrays = _global_batch(rng, n_global)
        glob = H.global_metrics(*arrays)
        glob32 = H.global_metrics(*arrays, dtype=np.float32)
        theirs = _official_global(official, arrays, torch.float64)
        theirs32 = _official_global(official, arrays, torch.float32)
        for k, name in GLOBAL_NAMES.items():
            assert glob[k].shape == theirs[name].shape, k
            if n_global == 1 and k in ("rte", "rte_scaled"):
                # Zero GT path length: the official code divides by 0 (inf / NaN); NaN here.
                assert np.isnan(glob[k]).all() and not np.isfinite(theirs[name]).any()
                continue
            np.testing.assert_allclose(glob[k], theirs[name], rtol=1e-6, atol=1e-9, err_msg=f"{k} F={n_global}")
            np.testing.assert_allclose(glob32[k], theirs32[name], rtol=2e-3, atol=2e-3, err_msg=k)
            _track(worst, "f64", k, glob[k], theirs[name])
            _track(worst, "f32", k, glob32[k], theirs32[name])

        # The sequence line: the official write_log → extract_metrics round trip against sequence_metrics.
        counter = {"n_human": 3 * m_per_frame, "count": 3 * m_per_frame + seq, "miss": seq, "fp": seq % 2}
        official_metrics = collections.defaultdict(list, per_theirs)
        official_metrics["precision"], official_metrics["recall"], official_metrics["f1_score"] = official.compute_prf1(
            counter["count"], counter["miss"], counter["fp"]
        )
        if n_global > 1:  # F = 1 prints "nan"/"inf" RTE, which the official parser drops (checked below)
            for name in GLOBAL_NAMES.values():
                official_metrics[name] = [theirs[name]]
        log = tmp_path / f"seq{seq}.txt"
        official.write_log(str(log), "emdb2", f"seq{seq}", counter, official_metrics)
        parsed = official.extract_metrics(str(log))
        row = H.sequence_metrics(counter, per_ours, glob if n_global > 1 else None)
        assert parsed[0] == row["n_human"]
        # extract_metrics returns Σ(v·n)/n, which may differ from the parsed value in the last bit.
        np.testing.assert_allclose(parsed[1:], [row[k] for k in H.SUMMARY_KEYS], rtol=1e-14, atol=0)
        rows.append(row)
        official_results.append(parsed)

    # An F = 1 sequence with its official inf/NaN RTE: the official parser finds no line; aggregate drops the row.
    arrays = _global_batch(rng, 1)
    theirs = _official_global(official, arrays, torch.float64)
    log = tmp_path / "nan.txt"
    nan_metrics = collections.defaultdict(list, {name: [theirs[name]] for name in GLOBAL_NAMES.values()})
    nan_metrics.update(precision=0.0, recall=0.0, f1_score=0.0)
    official.write_log(str(log), "emdb2", "nan", {"n_human": 7}, nan_metrics)
    assert official.extract_metrics(str(log))[0] == 0
    nan_row = H.sequence_metrics({"n_human": 7}, {}, H.global_metrics(*arrays))
    assert math.isnan(nan_row["rte"])
    rows.append(nan_row)

    summary = official.calculate_averages(official_results)
    ours = H.aggregate(rows)
    assert ours["n_human"] == summary[0]
    np.testing.assert_allclose([ours[k] for k in H.SUMMARY_KEYS], summary[1:], rtol=1e-12)

    lines = ["worst |ours - official| (abs, rel) — float64 | float32 (both sides in that precision):"]
    for k in (*CAM_NAMES, *GLOBAL_NAMES):
        (a64, r64), (a32, r32) = worst[("f64", k)], worst[("f32", k)]
        lines.append(f"  {k:14s} {a64:.1e} {r64:.1e} | {a32:.1e} {r32:.1e}")
    print("\n" + "\n".join(lines))
