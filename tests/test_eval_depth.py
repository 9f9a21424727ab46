"""Official video-depth metrics (human3r_jax.evaluation.depth): hand-computed cases, and a comparison against the
official CUT3R ``depth_evaluation`` that runs only when HUMAN3R_OFFICIAL_CUT3R points to a CUT3R checkout."""

from __future__ import annotations

import math
import os
import sys
import types

import numpy as np
import pytest

from human3r_jax.evaluation import depth as D

OFFICIAL = os.environ.get("HUMAN3R_OFFICIAL_CUT3R")


def _seq(gt_values, factor=1.0):
    gt = np.asarray(gt_values, np.float64).reshape(1, 1, -1)
    return gt * factor, gt


def test_twice_gt_median_and_scale_give_zero_error_metric_gives_one():
    pred, gt = _seq([1.0, 2.0, 4.0, 8.0], 2.0)
    for align in ("median", "scale", "lstsq", "lad_adam"):
        r = D.evaluate_sequence(pred, gt, align=align, max_depth=70.0)
        assert r["abs_rel"] == pytest.approx(0.0, abs=1e-5), align
        assert r["delta_1.25"] == 1.0 and r["valid_pixels"] == 4
    r = D.evaluate_sequence(pred, gt, align="metric", max_depth=70.0)
    assert r["abs_rel"] == pytest.approx(1.0)
    assert r["sq_rel"] == pytest.approx(np.mean(gt))  # (2g − g)²/g = g
    assert r["rmse"] == pytest.approx(math.sqrt(np.mean(gt**2)))
    assert r["log_rmse"] == pytest.approx(math.log(2.0))
    assert (r["delta_1.25"], r["delta_1.25^2"], r["delta_1.25^3"], r["delta_1"]) == (0.0, 0.0, 0.0, 0.0)  # 2 > 1.25³


def test_shift_is_removed_by_lstsq_only():
    pred, gt = _seq([1.0, 2.0, 3.0, 4.0])
    pred = 0.5 * pred + 3.0
    assert D.evaluate_sequence(pred, gt, align="lstsq")["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    r = D.evaluate_sequence(pred, gt, align="lstsq")
    assert (r["scale"], r["shift"]) == pytest.approx((2.0, -6.0))
    # median scaling cannot remove the shift: s = median(gt)/median(pred) with torch's lower median: 2 / 4
    r = D.evaluate_sequence(pred, gt, align="median")
    assert r["scale"] == pytest.approx(0.5)
    assert r["abs_rel"] == pytest.approx(np.mean(np.abs(0.5 * pred.ravel() - gt.ravel()) / gt.ravel()))


def test_lower_median_like_torch():
    assert D.lower_median([4.0, 1.0, 3.0, 2.0]) == 2.0
    assert D.lower_median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(D.lower_median([1.0, np.nan, 2.0]))


def test_invalid_pixels_and_caps():
    gt = np.array([[[0.0, -1.0, 2.0, 70.0, 80.0]]])
    pred = np.array([[[5.0, 5.0, 3.0, 70.0, 80.0]]])
    assert D.valid_mask(gt, 70.0).tolist() == [[[False, False, True, False, False]]]
    r = D.evaluate_dataset_sequence(pred, gt, "bonn", "metric")  # only gt = 2 counts (70 excluded: strict)
    assert r["valid_pixels"] == 1 and r["abs_rel"] == pytest.approx(0.5)
    r = D.evaluate_dataset_sequence(pred, gt, "kitti_s1_500", "metric")  # no cap: 2, 70, 80 count
    assert r["valid_pixels"] == 3 and r["abs_rel"] == pytest.approx(0.5 / 3)


def test_sintel_post_clip_after_alignment():
    gt = np.array([[[10.0, 20.0, 60.0]]])
    pred = np.array([[[1.0, 2.0, 9.0]]])  # × 10 → 10, 20, 90 → clipped to 70 on Sintel only
    sintel = D.evaluate_dataset_sequence(pred, gt, "sintel", "metric")
    assert sintel["abs_rel"] == pytest.approx(np.mean([0.9, 0.9, 51 / 60]))
    r = D.evaluate_sequence(pred, gt, align="median", max_depth=70.0, post_clip_max=70.0)
    assert r["scale"] == 10.0 and r["abs_rel"] == pytest.approx((10 / 60) / 3)
    assert D.evaluate_sequence(pred, gt, align="median", max_depth=70.0)["abs_rel"] == pytest.approx((30 / 60) / 3)


def test_log_clamp_only_for_log_and_delta():
    gt = np.array([[[1.0, 2.0]]])
    pred = np.array([[[-1.0, 2.0]]])
    r = D.evaluate_sequence(pred, gt, align="metric")
    assert r["abs_rel"] == pytest.approx(1.0)  # |−1 − 1| / 1 = 2, mean with 0
    assert r["log_rmse"] == pytest.approx(math.sqrt(math.log(1e-5) ** 2 / 2))
    assert r["delta_1.25^3"] == 0.5


def test_irls_scale_start_steps_and_floor():
    pred, gt = _seq([1.0, 2.0, 3.0, 10.0])
    gt = gt * np.array([2.0, 2.0, 2.0, 1.0])  # three pixels say s = 2, one outlier says 1
    s = np.mean(gt) / np.mean(pred)  # the official start: ratio of means
    for _ in range(10):
        w = 1.0 / (np.abs(s * pred - gt) + 1e-8)
        s = np.sum(w * pred * gt) / np.sum(w * pred**2)
    assert D.align_scale_irls(pred.ravel(), gt.ravel())[0] == pytest.approx(s, rel=1e-12)
    assert D.align_scale_irls(np.array([1.0, 1.0]), np.array([1e-6, 1e-6]))[0] == 1e-3


def test_custom_mask_after_alignment_and_empty_sequence():
    gt = np.array([[[1.0, 2.0, 4.0]]])
    pred = np.array([[[1.0, 1.0, 2.0]]])  # lower median ratio 2/1 = 2 → 2, 2, 4
    sel = np.array([[[False, True, True]]])
    r = D.evaluate_sequence(pred, gt, align="median", custom_mask=sel)
    assert r["scale"] == 2.0 and r["valid_pixels"] == 2 and r["abs_rel"] == pytest.approx(0.0)
    r = D.evaluate_sequence(pred, np.zeros_like(gt), align="scale")
    assert r["valid_pixels"] == 0 and all(r[k] == 0.0 for k in D.METRICS)


def test_aggregate_weighted_by_valid_pixels():
    a = {**dict.fromkeys(D.METRICS, 1.0), "valid_pixels": 3}
    b = {**dict.fromkeys(D.METRICS, 5.0), "valid_pixels": 1}
    empty = {**dict.fromkeys(D.METRICS, 0.0), "valid_pixels": 0}
    assert D.aggregate_sequences([a, b, empty]) == dict.fromkeys(D.METRICS, 2.0)
    with pytest.raises(ZeroDivisionError):
        D.aggregate_sequences([empty])


def test_dataset_names():
    assert D.dataset_caps("bonn_s1_500") == D.dataset_caps("bonn") == D.DepthCaps(70.0, None)
    assert D.dataset_caps("sintel") == D.DepthCaps(70.0, 70.0)
    with pytest.raises(ValueError):
        D.dataset_caps("nyu")


def _official_depth_evaluation():
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # imported by tools.py, unused by depth_evaluation
    sys.path.insert(0, OFFICIAL)
    try:
        from eval.video_depth.tools import depth_evaluation
    finally:
        sys.path.remove(OFFICIAL)
    return depth_evaluation


@pytest.mark.skipif(not OFFICIAL, reason="set HUMAN3R_OFFICIAL_CUT3R to a CUT3R checkout (with eval/video_depth)")
def test_matches_official_depth_evaluation_float64():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    depth_evaluation = _official_depth_evaluation()
    flags = {
        "metric": {"metric_scale": True},
        "median": {},
        "scale": {"align_with_scale": True},
        "lstsq": {"align_with_lstsq": True},
        "lad": {"align_with_lad": True},
        "lad_adam": {"align_with_lad2": True, "max_iters": 200},
    }
    rng = np.random.default_rng(0)
    for case in range(6):
        gt = rng.uniform(0.3, 90.0, (2, 6, 7))
        gt[rng.random(gt.shape) < 0.2] = 0.0
        pred = gt.clip(0.5) / rng.uniform(0.1, 10.0) * rng.lognormal(0, 0.3, gt.shape) + rng.normal(0, 0.2, gt.shape)
        opts = {"max_depth": (70.0, None)[case % 2], "post_clip_max": (None, 70.0)[case % 2]}
        for mode, flag in flags.items():
            ref = depth_evaluation(pred.copy(), gt.copy(), **flag, **opts)[0]
            ours = D.evaluate_sequence(pred, gt, align=mode, max_iters=flag.get("max_iters", 1000), **opts)
            assert ours["valid_pixels"] == ref["valid_pixels"]
            for k in D.METRICS:
                # δ fractions are averaged in float32 by the official code
                tol = 1e-7 if k.startswith("delta") else 1e-6 * abs(ref[D.OFFICIAL_NAMES[k]])
                assert abs(ours[k] - ref[D.OFFICIAL_NAMES[k]]) <= tol, (case, mode, k)
