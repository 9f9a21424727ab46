"""Official video-depth metrics (CUT3R / TTT3R / Human3R ``eval/video_depth``), one sequence at a time.

Protocol (facts read from CUT3R/CUT3R@8bc15dc ``eval/video_depth/tools.py``
``depth_evaluation`` and ``eval_depth.py``; the ``tools.py`` of Inception3D/TTT3R@cc6142b and of Human3R is
byte-identical):

1. valid pixels: GT > 0 and, when the dataset has a cap, GT < ``max_depth`` (70 m for Sintel and Bonn, no cap
   for KITTI). Every later step sees only these pixels, all frames of the sequence pooled together.
2. optional pre-clip of the prediction (unused by the official scripts).
3. one alignment per sequence (``ALIGN_MODES``); ``--align scale`` → ``"scale"``, ``--align metric`` →
   ``"metric"``, ``--align scale&shift`` → ``"lad_adam"`` (see ``OFFICIAL_ALIGN``).
4. post-clip: Sintel clips the aligned prediction to ≤ 70; Bonn and KITTI do not.
5. metrics on the valid pixels: Abs Rel, Sq Rel, RMSE with the prediction as is; then the prediction is clamped
   to ≥ 1e-5 and Log RMSE and the δ thresholds are computed.
6. dataset score: average of per-sequence metrics weighted by each sequence's valid-pixel count
   (``aggregate_sequences``).

Official quirks reproduced here:
- ``median`` and the ``lad``/``lad_adam`` initial scale use torch's median, i.e. the LOWER of the two middle
  values for an even count (``lower_median``), and NaN if any value is NaN.
- ``scale`` is an L1 fit by 10 IRLS steps started from mean(GT)/mean(pred) (NaN-ignoring means); the scale is
  clamped to ≥ 1e-3 only once, after the loop.
- ``lad_adam`` ("scale&shift") is Adam (lr 1e-4, betas 0.9/0.999, eps 1e-8) on sum|s·pred + t − GT| from the
  median-ratio scale and t = 0; it stops after at most 1000 steps, or once the loss before a step differs by
  < 1e-6 from the previous one (the step of that iteration is still applied). With that lr it stays close to
  median scaling.
- Abs Rel, Sq Rel and RMSE use the unclamped aligned prediction (it can be ≤ 0 after a shift); only Log RMSE
  and δ see the 1e-5 clamp.
- a "δ < 1" entry is reported (the fraction of max(p/g, g/p) < 1: zero in practice).
- a sequence without valid pixels gets every metric 0 (and weight 0 in the aggregate).
- ``custom_mask`` (unused by the scripts) selects pixels for the metrics only, after the alignment was fitted on
  all valid pixels; ``valid_pixels`` then counts the selected ones.
- ``disp_input`` (unused by the scripts): the prediction is a disparity, aligned to 1/(GT + 1e-8), then turned
  back to depth with 1/x where x > 0 and 0 elsewhere.

Precision: the official run holds the prediction in float32 (``frame_*.npy`` resized by OpenCV), the GT in
float64 for Bonn/KITTI and float32 for Sintel, and torch keeps every scaled prediction in float32. This module
works in float64 (equal to the official function fed float64 arrays); ``float32_pred=True`` rounds the prediction
to float32 where torch does, for a float32 prediction with a float64 GT (Bonn, KITTI). That matters for
``scale``: its IRLS weights 1/(|r| + 1e-8) amplify the float32 rounding of s·pred. Not emulated: the float32 Adam
state of ``lad_adam``, an all-float32 run (Sintel), and the GPU reduction order of the official runs; the δ
fractions, which torch averages in float32, are returned in float64.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Metric keys in output order, and the names the official result_{align}.json uses for them.
METRICS = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1", "delta_1.25", "delta_1.25^2", "delta_1.25^3")
OFFICIAL_NAMES = {
    "abs_rel": "Abs Rel",
    "sq_rel": "Sq Rel",
    "rmse": "RMSE",
    "log_rmse": "Log RMSE",
    "delta_1": "δ < 1.",
    "delta_1.25": "δ < 1.25",
    "delta_1.25^2": "δ < 1.25^2",
    "delta_1.25^3": "δ < 1.25^3",
}

# Alignment modes of depth_evaluation: metric_scale, the median default, align_with_scale, align_with_lstsq,
# align_with_lad (scipy BFGS), align_with_lad2 (torch Adam).
ALIGN_MODES = ("metric", "median", "scale", "lstsq", "lad", "lad_adam")
# eval_depth.py --align value → mode.
OFFICIAL_ALIGN = {"metric": "metric", "scale": "scale", "scale&shift": "lad_adam"}

LOG_CLAMP = 1e-5  # prediction floor before the log and the ratios
IRLS_EPS = 1e-8  # added to |residual| before taking 1/|r| as the IRLS weight
IRLS_STEPS = 10
MIN_SCALE = 1e-3  # floor of the IRLS scale
DISP_EPS = 1e-8  # added to GT before inverting it in disparity mode


@dataclasses.dataclass(frozen=True)
class DepthCaps:
    """Per-dataset settings of eval_depth.py: GT cap of the valid mask and post-alignment clip of the prediction."""

    max_depth: float | None
    post_clip_max: float | None


DATASET_CAPS = {
    "sintel": DepthCaps(max_depth=70.0, post_clip_max=70.0),
    "bonn": DepthCaps(max_depth=70.0, post_clip_max=None),
    "kitti": DepthCaps(max_depth=None, post_clip_max=None),
}


def dataset_caps(dataset: str) -> DepthCaps:
    """Caps for a dataset name as the launchers spell it: ``sintel``, ``bonn``, ``bonn_500``, ``kitti_s1_500`` …

    The official script matches the prefix (``startswith("bonn")`` / ``"kitti"``), so the long variants share
    the caps of their base set.
    """
    for base, caps in DATASET_CAPS.items():
        if dataset == base or dataset.startswith(base + "_"):
            return caps
    raise ValueError(f"unknown video-depth dataset {dataset!r}; expected one of {sorted(DATASET_CAPS)}")


def valid_mask(gt, max_depth: float | None):
    """GT depth [F, H, W] → bool mask [F, H, W]: GT > 0 and (when capped) GT < max_depth (strict on both sides)."""
    gt = np.asarray(gt, np.float64)
    mask = gt > 0
    if max_depth is not None:
        mask &= gt < max_depth
    return mask


def lower_median(x):
    """Median as torch.median returns it: the lower middle value for an even count; NaN if any value is NaN."""
    x = np.asarray(x, np.float64).ravel()
    if np.isnan(x).any():
        return np.nan
    k = (x.size - 1) // 2
    return float(np.partition(x, k)[k])


def align_median(pred, gt):
    """Scale s = median(gt) / median(pred) (lower medians) for valid pixels pred, gt [N] → (s, 0.0)."""
    return lower_median(gt) / lower_median(pred), 0.0


def _apply(s, t, pred, float32: bool):
    """s·pred (+ t) [N]; with ``float32`` as torch does it on a float32 prediction: s and t cast to float32 and
    each operation rounded to float32."""
    if not float32:
        return s * pred + t
    out = np.float32(s) * pred.astype(np.float32)
    if t != 0.0:
        out = out + np.float32(t)
    return out.astype(np.float64)


def align_scale_irls(pred, gt, float32: bool = False):
    """L1 scale fit for valid pixels pred, gt [N] → (s, 0.0): mean-ratio start, 10 IRLS steps, s ≥ 1e-3.

    ``float32``: the scaled prediction s·pred is rounded to float32 as in the official run (float32 prediction,
    float64 GT). The weights 1/(|r| + 1e-8) make the fit very sensitive to that rounding.
    """
    # torch squares a float32 prediction in float32. Its float32 mean (start value) depends on the reduction
    # order and is not reproduced: the mean here is float64, and the IRLS amplifies that ~1e-7 difference.
    pred_sq = (pred.astype(np.float32) ** 2).astype(np.float64) if float32 else pred**2
    s = np.nanmean(gt) / np.nanmean(pred)
    for _ in range(IRLS_STEPS):
        w = 1.0 / (np.abs(_apply(s, 0.0, pred, float32) - gt) + IRLS_EPS)
        s = np.sum(w * pred * gt) / np.sum(w * pred_sq)
    # np.maximum keeps a NaN scale NaN, as torch.clamp does.
    return float(np.maximum(s, MIN_SCALE)), 0.0


def align_lstsq(pred, gt):
    """Least-squares scale and shift for valid pixels pred, gt [N] → (s, t) minimising Σ(s·pred + t − gt)²."""
    a = np.stack([pred, np.ones_like(pred)], axis=1)
    (s, t), *_ = np.linalg.lstsq(a, gt, rcond=None)
    return float(s), float(t)


def _l1_loss(params, pred, gt):
    s, t = params
    return np.sum(np.abs(s * pred + t - gt))


def align_lad_bfgs(pred, gt):
    """L1 scale and shift by scipy's default minimiser (BFGS, numeric gradient) from (median ratio, 0) → (s, t)."""
    # scipy comes with jax; imported here as only this (unused by the scripts) mode needs it
    from scipy.optimize import minimize

    s0, _ = align_median(pred, gt)
    result = minimize(_l1_loss, np.array([s0, 0.0]), args=(pred, gt))
    return float(result.x[0]), float(result.x[1])


def align_lad_adam(pred, gt, lr: float = 1e-4, max_iters: int = 1000, tol: float = 1e-6):
    """L1 scale and shift by Adam (torch defaults) from (median ratio, 0) for valid pixels pred, gt [N] → (s, t).

    Loop as the official one: loss L_i = Σ|s·pred + t − gt| at the current parameters, Adam step, then stop if
    |L_{i−1} − L_i| < tol. The gradient of the sum of |r| is Σ sign(r)·(pred, 1), sign(0) = 0.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    params = np.array([align_median(pred, gt)[0], 0.0])
    m = np.zeros(2)
    v = np.zeros(2)
    prev_loss = None
    for i in range(max_iters):
        r = params[0] * pred + params[1] - gt
        loss = np.sum(np.abs(r))
        sign = np.sign(r)
        grad = np.array([np.sum(sign * pred), np.sum(sign)])
        step = i + 1
        m = m + (1 - beta1) * (grad - m)  # torch's lerp form of the first-moment update
        v = v * beta2 + (1 - beta2) * grad * grad
        denom = np.sqrt(v) / np.sqrt(1 - beta2**step) + eps
        params = params - (lr / (1 - beta1**step)) * m / denom
        if prev_loss is not None and abs(prev_loss - loss) < tol:
            break
        prev_loss = loss
    return float(params[0]), float(params[1])


def _fit(align: str, pred, gt, lr: float, max_iters: int, float32: bool):
    if align == "metric":
        return 1.0, 0.0
    if align == "median":
        return align_median(pred, gt)
    if align == "scale":
        return align_scale_irls(pred, gt, float32)
    if align == "lstsq":
        return align_lstsq(pred, gt)
    if align == "lad":
        return align_lad_bfgs(pred, gt)
    if align == "lad_adam":
        return align_lad_adam(pred, gt, lr=lr, max_iters=max_iters)
    raise ValueError(f"unknown alignment {align!r}; expected one of {ALIGN_MODES}")


def depth_metrics(pred, gt):
    """Metrics of aligned predictions against GT, both [N] (valid pixels only) → dict of ``METRICS`` floats."""
    err = pred - gt
    out = {
        "abs_rel": np.mean(np.abs(err) / gt),
        "sq_rel": np.mean(err**2 / gt),
        "rmse": np.sqrt(np.mean(err**2)),
    }
    pred = np.maximum(pred, LOG_CLAMP)  # only Log RMSE and δ see the clamp
    out["log_rmse"] = np.sqrt(np.mean((np.log(pred) - np.log(gt)) ** 2))
    ratio = np.maximum(pred / gt, gt / pred)
    for key, thr in (("delta_1", 1.0), ("delta_1.25", 1.25), ("delta_1.25^2", 1.25**2), ("delta_1.25^3", 1.25**3)):
        out[key] = np.mean(ratio < thr)
    return {k: float(out[k]) for k in METRICS}


def evaluate_sequence(
    pred,
    gt,
    *,
    align: str = "scale",
    max_depth: float | None = 80.0,
    post_clip_min: float | None = None,
    post_clip_max: float | None = None,
    pre_clip_min: float | None = None,
    pre_clip_max: float | None = None,
    custom_mask=None,
    disp_input: bool = False,
    lr: float = 1e-4,
    max_iters: int = 1000,
    float32_pred: bool = False,
):
    """Official depth_evaluation for one sequence, every option of it.

    pred: predicted depth [F, H, W] (or disparity if ``disp_input``) at GT resolution; gt: GT depth [F, H, W]
    (≤ 0 = invalid); custom_mask: optional bool [F, H, W]. Defaults are those of the official function
    (max_depth 80); ``evaluate_dataset_sequence`` applies the per-dataset settings of the scripts.
    ``float32_pred``: emulate the official precision for a float32 prediction and a float64 GT (Bonn, KITTI):
    the prediction is rounded to float32 after each step where torch keeps it in float32 (input, clips, s·pred,
    + t, inversion); the fits and metrics stay float64 as there. Not emulated: the float32 Adam state of
    ``lad_adam`` and an all-float32 run (Sintel's float32 GT).
    Returns a dict of the ``METRICS`` floats plus ``valid_pixels`` (int) and ``scale``/``shift`` (the fit).
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    r32 = (lambda x: x.astype(np.float32).astype(np.float64)) if float32_pred else (lambda x: x)
    pred = r32(pred)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and GT {gt.shape} shapes differ")
    mask = valid_mask(gt, max_depth)
    p, g = pred[mask], gt[mask]
    if custom_mask is not None:
        custom_mask = np.asarray(custom_mask, bool)
        if custom_mask.shape != gt.shape:
            raise ValueError(f"custom_mask {custom_mask.shape} and GT {gt.shape} shapes differ")
        metric_sel = custom_mask[mask]
    else:
        metric_sel = np.ones(p.shape, bool)
    n_valid = int(metric_sel.sum())
    if n_valid == 0:
        # official: every metric is replaced by 0 when nothing is valid
        return {**dict.fromkeys(METRICS, 0.0), "valid_pixels": 0, "scale": float("nan"), "shift": float("nan")}

    if pre_clip_min is not None:
        p = r32(np.maximum(p, pre_clip_min))
    if pre_clip_max is not None:
        p = r32(np.minimum(p, pre_clip_max))
    target = 1.0 / (g + DISP_EPS) if disp_input else g  # disparity mode aligns in inverse-depth space
    s, t = _fit(align, p, target, lr, max_iters, float32_pred)
    p = p if align == "metric" else _apply(s, t, p, float32_pred)
    if disp_input:
        p = r32(np.where(p > 0, 1.0 / np.where(p > 0, p, 1.0), 0.0))
    if post_clip_min is not None:
        p = r32(np.maximum(p, post_clip_min))
    if post_clip_max is not None:
        p = r32(np.minimum(p, post_clip_max))

    out = depth_metrics(p[metric_sel], g[metric_sel])
    return {**out, "valid_pixels": n_valid, "scale": s, "shift": t}


def evaluate_dataset_sequence(pred, gt, dataset: str, align: str):
    """One sequence as eval_depth.py scores it: pred, gt [F, H, W]; dataset as in ``dataset_caps``; align is
    the script's ``--align`` value (``metric``, ``scale``, ``scale&shift``) or a mode of ``ALIGN_MODES``."""
    caps = dataset_caps(dataset)
    mode = OFFICIAL_ALIGN.get(align, align)
    return evaluate_sequence(pred, gt, align=mode, max_depth=caps.max_depth, post_clip_max=caps.post_clip_max)


def aggregate_sequences(results):
    """Dataset score from per-sequence result dicts: each metric averaged with the sequence's ``valid_pixels`` as
    weight (official: np.average with weights). Raises ZeroDivisionError when no sequence has a valid pixel."""
    weights = np.array([r["valid_pixels"] for r in results], np.float64)
    if len(results) == 0 or weights.sum() == 0:
        raise ZeroDivisionError("no valid pixel in any sequence: the weighted average is undefined")
    return {k: float(np.average([r[k] for r in results], weights=weights)) for k in METRICS}
