"""Official Human3R human-mesh metrics (3DPW, EMDB-1/2, RICH) as plain NumPy functions.

Facts from fanegg/Human3R@402f2b2 (read through AdrienBousquieEPFL/Human3R) ``eval/global_human/utils.py``
(``get_bbx_overlap``, ``match_2d_greedy``, ``compute_prf1``, ``batch_compute_similarity_transform_torch``,
``batch_align_by_pelvis``, ``align_pcl``, ``first_align_joints``, ``global_align_joints``, ``compute_jpe``,
``compute_rte``, ``compute_jitter``, ``compute_foot_sliding``, ``eval_camcoord``, ``eval_global``, ``avg_per_human``,
``write_log``, ``extract_metrics``, ``calculate_averages``) and ``launch.py`` (``match_2d``, the per-frame loop of
``eval_smpl_error``).

Pipeline of one sequence:

1. every frame: ``match_2d_greedy`` pairs predicted and GT people by their 2-D joints (ROMP's greedy matching:
   spectral-norm cost, joint-box IoU ≥ 0.05); unmatched people only count in precision/recall/F1 (``prf1``).
2. every matched (frame, person): ``camcoord_metrics`` in the camera frame, millimetres — MPJPE / PVE after
   centring on the hip-mean pelvis, PA-MPJPE / PA-PVE after a similarity Procrustes, metric (uncentred)
   MPJPE / PVE and the pelvis (root) error.
3. EMDB-2 / RICH: ``global_metrics`` on the world-frame joints/vertices of the matched frames only, concatenated
   in frame order — W-MPJPE (Sim(3) fitted on the first two frames of each 100-frame window), WA-MPJPE (Sim(3)
   fitted on the whole window), RTE (% of the GT root path length, rigid and scaled variants), jitter (units of
   10 m/s³) and foot sliding (mm).
4. ``sequence_metrics``: the sequence's log line (plain means over matched instances, printed with one decimal);
   ``aggregate``: the n_human-weighted mean of those rounded lines over all sequences.

Units: inputs in metres; outputs in millimetres except RTE (%), jitter (10 m/s³) and P/R/F1 (%). The official
summary labels the global block "cm" — a mislabel, the values are mm.

Precision: float64 by default (the official code runs in float32 torch on CPU); ``camcoord_metrics`` and
``global_metrics`` take ``dtype=np.float32`` to reproduce float32 arithmetic. Matching always runs in float64.

Departures from the official code (none changes a number on inputs the official code accepts):

- ``bbox_iou``: the official ``get_bbx_overlap`` asserts x1 < x2 and y1 < y2 and so aborts the whole run on a
  degenerate box (e.g. a predicted focal of 0 collapses the projected joints) or a NaN; here such a box has IoU
  0.0, so the pair can never match (it is a false positive / miss instead).
- ``match_2d_greedy``: a NaN cost (non-finite 2-D joints) is treated as +inf, and struck pairs are tracked by a
  mask instead of being overwritten with inf; the official ``np.argmin`` would pick a NaN first (then abort in
  the IoU assert) or could re-pick an already struck pair when real costs are inf. Identical for finite costs.
- ``global_metrics`` on short or static sequences: the official code does not raise there but divides by a zero
  GT path length (F = 1 or a motionless root) and returns inf/NaN RTE; here RTE is NaN for every frame in that
  case. Jitter is empty for F < 4 and foot sliding for F < 2, as in the official code; F = 0 (which the official
  launcher never reaches: it crashes before) gives empty arrays everywhere.
- ``aggregate`` averages the given rows once; the official summary re-parses every ``.txt`` log in the output
  directory, so re-running into the same directory double-counts sequences. Rows whose values are not finite are
  left out, as the official regex cannot parse the "nan"/"inf" that ``write_log`` prints.
"""

from __future__ import annotations

import math

import numpy as np

FOOT_VERTICES = (3216, 3387, 6617, 6787)  # SMPL foot vertices used by compute_foot_sliding
CAMCOORD_KEYS = ("mpjpe", "pve", "pa_mpjpe", "pa_pve", "metric_mpjpe", "metric_pve", "root_error")
GLOBAL_KEYS = ("w_mpjpe", "wa_mpjpe", "rte", "rte_scaled", "jitter", "foot_sliding")
# The metrics of one log line, in write_log's order (also extract_metrics' regex order).
SUMMARY_KEYS = (
    "pve",
    "pa_pve",
    "metric_pve",
    "mpjpe",
    "pa_mpjpe",
    "metric_mpjpe",
    "root_error",
    "w_mpjpe",
    "wa_mpjpe",
    "rte",
    "rte_scaled",
    "jitter",
    "foot_sliding",
    "precision",
    "recall",
    "f1",
)


# ----------------------------------------------------------------------------------------------------------------
# 2-D matching and detection scores


def bbox_iou(p: np.ndarray, g: np.ndarray) -> float:
    """IoU of the axis-aligned boxes spanned by two point sets p [J, 2] and g [K, 2] (official ``get_bbx_overlap``).

    Boxes are (min, max) of the points; widths, heights and the intersection use the inclusive "+1 pixel"
    convention. Departure: a degenerate (x1 ≥ x2 or y1 ≥ y2), empty or non-finite box gives 0.0 where the
    official code fails an assert.
    """
    p = np.asarray(p, dtype=np.float64)[:, :2]
    g = np.asarray(g, dtype=np.float64)[:, :2]
    if p.size == 0 or g.size == 0:
        return 0.0
    px1, py1 = p.min(axis=0)
    px2, py2 = p.max(axis=0)
    gx1, gy1 = g.min(axis=0)
    gx2, gy2 = g.max(axis=0)
    if not np.isfinite([px1, py1, px2, py2, gx1, gy1, gx2, gy2]).all():
        return 0.0
    if not (px1 < px2 and py1 < py2 and gx1 < gx2 and gy1 < gy2):
        return 0.0
    # Same operation order as the official code, so float64 results are bit-identical.
    inter = max(0.0, min(px2, gx2) - max(px1, gx1) + 1) * max(0.0, min(py2, gy2) - max(py1, gy1) + 1)
    area_p = (px2 - px1 + 1) * (py2 - py1 + 1)
    area_g = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    return float(inter / float(area_p + area_g - inter))


def match_2d_greedy(
    pred_j2d: np.ndarray, gt_j2d: np.ndarray, iou_thresh: float = 0.05
) -> tuple[np.ndarray, list[int], list[int]]:
    """Greedy 2-D matching of predicted to GT people (official ``match_2d`` + ``match_2d_greedy``, from ROMP).

    pred_j2d [P, J', 2], gt_j2d [G, J, 2]; only the first J predicted joints are used (``pred[:, :J]``).
    Cost of a pair = spectral norm (largest singular value) of the [J, 2] joint difference. Pairs are visited in
    increasing cost (pred-major order, first index on ties); each round takes pairs until one is accepted (both
    sides free and IoU ≥ iou_thresh) or one has IoU < iou_thresh, which increments the false-positive counter and
    ends the round without a match even when a side was already taken. Rounds go on while some GT person is
    unmatched and (#matched preds + false-positive counter) < P.

    Returns (matches int64 [M, 2] of (pred, gt) in acceptance order, unmatched preds sorted, unmatched GTs sorted).
    """
    pred = np.asarray(pred_j2d, dtype=np.float64)
    gt = np.asarray(gt_j2d, dtype=np.float64)
    n_pred, n_gt = len(pred), len(gt)
    gt = gt[..., :2] if gt.ndim == 3 else gt.reshape(0, 0, 2)  # empty inputs may come as shape (0,)
    pred = pred[:, : gt.shape[1], :2] if pred.ndim == 3 else pred.reshape(0, 0, 2)

    matches: list[tuple[int, int]] = []
    pred_taken = np.zeros(n_pred, dtype=bool)
    gt_taken = np.zeros(n_gt, dtype=bool)
    if n_pred and n_gt:
        diff = (pred[:, None] - gt[None]).reshape(n_pred * n_gt, -1, 2)  # row p * G + g (pred-major)
        finite = np.isfinite(diff).all(axis=(1, 2))
        cost = np.full(n_pred * n_gt, np.inf)  # departure: non-finite joints sort last (NaN would sort first)
        if finite.any():
            cost[finite] = np.linalg.norm(diff[finite], ord=2, axis=(-2, -1))
        struck = np.zeros(cost.shape, dtype=bool)
        n_fp_rounds = 0
        while gt_taken.sum() < n_gt and pred_taken.sum() + n_fp_rounds < n_pred:
            while True:
                open_pairs = np.flatnonzero(~struck)
                if open_pairs.size == 0:  # unreachable with the loop condition above; guards an endless loop
                    break
                k = int(open_pairs[np.argmin(cost[open_pairs])])
                struck[k] = True
                p, g = divmod(k, n_gt)
                iou = bbox_iou(pred[p], gt[g])
                if not pred_taken[p] and not gt_taken[g] and iou >= iou_thresh:
                    matches.append((p, g))
                    pred_taken[p] = gt_taken[g] = True
                    break
                if iou < iou_thresh:
                    n_fp_rounds += 1
                    break
            if open_pairs.size == 0:
                break

    match_arr = np.array(matches, dtype=np.int64).reshape(-1, 2)
    false_pos = [int(i) for i in np.flatnonzero(~pred_taken)]
    misses = [int(i) for i in np.flatnonzero(~gt_taken)]
    return match_arr, false_pos, misses


def prf1(count: int, miss: int, fp: int) -> tuple[float, float, float]:
    """(precision, recall, F1) in percent from GT count, misses and false positives (official ``compute_prf1``).

    TP = count − miss; each ratio is rounded to 2 decimals (Python ``round``) before ×100; all 0 when count or TP
    is 0.
    """
    if count == 0:
        return 0.0, 0.0, 0.0
    tp = count - miss
    if tp == 0:
        return 0.0, 0.0, 0.0
    f1 = round(tp / (tp + 0.5 * (fp + miss)), 2)
    recall = round(tp / (tp + miss), 2)
    precision = round(tp / (tp + fp), 2)
    return 100.0 * precision, 100.0 * recall, 100.0 * f1


# ----------------------------------------------------------------------------------------------------------------
# Alignments


def similarity_procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x [B, N, 3] aligned onto y [B, N, 3] by a per-batch similarity (official
    ``batch_compute_similarity_transform_torch``): K = X̂ᵀY (centred), K = U S Vᵀ, R = V diag(1, 1, sign det(U Vᵀ)) Uᵀ,
    scale = trace(R K) / ‖X̂‖²_F, t = μ_y − scale R μ_x. Returns scale R x + t [B, N, 3].
    """
    mu_x = x.mean(axis=1, keepdims=True)
    mu_y = y.mean(axis=1, keepdims=True)
    xc, yc = x - mu_x, y - mu_y
    var_x = (xc**2).sum(axis=(1, 2))
    k = np.swapaxes(xc, 1, 2) @ yc  # [B, 3, 3]
    u, _, vh = np.linalg.svd(k)
    z = np.broadcast_to(np.eye(3, dtype=x.dtype), k.shape).copy()
    z[:, 2, 2] = np.sign(np.linalg.det(u @ vh))  # reflection fix: det(R) = +1
    r = np.swapaxes(vh, 1, 2) @ z @ np.swapaxes(u, 1, 2)
    with np.errstate(invalid="ignore", divide="ignore"):  # all-equal points: scale NaN, as the official
        scale = np.trace(r @ k, axis1=1, axis2=2) / var_x
    t = mu_y - scale[:, None, None] * (mu_x @ np.swapaxes(r, 1, 2))
    return scale[:, None, None] * (x @ np.swapaxes(r, 1, 2)) + t


def umeyama(y: np.ndarray, x: np.ndarray, fixed_scale: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) with s R x + t ≈ y for point sets x, y [*, N, 3] (official ``align_pcl``, Umeyama).

    C = (y − ȳ)ᵀ(x − x̄) / N = U D Vᵀ, S = diag(1, 1, −1 if det U det V < 0), R = U S Vᵀ,
    s = trace(D S) / (Σ‖x − x̄‖² / N) (1 when fixed_scale), t = ȳ − s R x̄.
    Returns s [*, 1], R [*, 3, 3], t [*, 3].
    """
    n = x.shape[-2]
    my = y.sum(axis=-2) / n
    mx = x.sum(axis=-2) / n
    y0 = y - my[..., None, :]
    x0 = x - mx[..., None, :]
    c = np.swapaxes(y0, -1, -2) @ x0 / n
    u, d, vh = np.linalg.svd(c)
    sign = np.where(np.linalg.det(u) * np.linalg.det(vh) < 0, -1.0, 1.0).astype(x.dtype)
    s_diag = np.concatenate([np.ones(sign.shape + (2,), dtype=x.dtype), sign[..., None]], axis=-1)
    r = (u * s_diag[..., None, :]) @ vh  # U S Vᵀ
    if fixed_scale:
        s = np.ones(x.shape[:-2] + (1,), dtype=x.dtype)
    else:
        var = (x0**2).sum(axis=(-1, -2)) / n
        with np.errstate(invalid="ignore", divide="ignore"):  # a single point: 0/0 → NaN, as the official
            s = (d * s_diag).sum(axis=-1, keepdims=True) / var[..., None]
    t = my - s * (r @ mx[..., None])[..., 0]
    return s, r, t


def _apply_sim3(s: np.ndarray, r: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """s R p + t for one transform (s [1], R [3, 3], t [3]) and points [..., 3]."""
    return s * (pts @ r.T) + t


def _jpe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance over the point axis: [..., N, 3] → [...] (official ``compute_jpe``)."""
    return np.sqrt(((a - b) ** 2).sum(axis=-1)).mean(axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# Camera-frame metrics


def camcoord_metrics(
    pred_j3d: np.ndarray,
    gt_j3d: np.ndarray,
    pred_v3d: np.ndarray,
    gt_v3d: np.ndarray,
    pelvis_idx: tuple[int, ...],
    dtype=np.float64,
) -> dict[str, np.ndarray]:
    """Per-instance camera-frame errors in mm (official ``eval_camcoord`` + ``batch_align_by_pelvis``).

    pred_j3d, gt_j3d [M, J, 3]; pred_v3d, gt_v3d [M, V, 3] (metres, matched pairs). The pelvis is the mean of
    the joints ``pelvis_idx`` (hips: (2, 3) for the 14 LSP joints of 3DPW, (1, 2) for SMPL joints); vertices are
    centred with the JOINT pelvis. Returns [M] arrays: "mpjpe" / "pve" (centred; official ca_mpjpe / ca_pve),
    "pa_mpjpe" / "pa_pve" (own similarity Procrustes each), "metric_mpjpe" / "metric_pve" (uncentred; me_*),
    "root_error" (pelvis distance; rt_error).
    """
    pj, gj, pv, gv = (np.asarray(a, dtype=dtype) for a in (pred_j3d, gt_j3d, pred_v3d, gt_v3d))
    idx = list(pelvis_idx)
    p_pelvis = pj[:, idx].mean(axis=1, keepdims=True)  # [M, 1, 3]
    g_pelvis = gj[:, idx].mean(axis=1, keepdims=True)
    pj_c, gj_c = pj - p_pelvis, gj - g_pelvis
    pv_c, gv_c = pv - p_pelvis, gv - g_pelvis
    mm = 1000
    return {
        "mpjpe": _jpe(pj_c, gj_c) * mm,
        "pve": _jpe(pv_c, gv_c) * mm,
        "pa_mpjpe": _jpe(similarity_procrustes(pj_c, gj_c), gj_c) * mm,
        "pa_pve": _jpe(similarity_procrustes(pv_c, gv_c), gv_c) * mm,
        "metric_mpjpe": _jpe(pj, gj) * mm,
        "metric_pve": _jpe(pv, gv) * mm,
        "root_error": _jpe(p_pelvis, g_pelvis) * mm,
    }


# ----------------------------------------------------------------------------------------------------------------
# World-frame metrics


def _rte(gt_root: np.ndarray, pred_root: np.ndarray, fixed_scale: bool) -> np.ndarray:
    """Root error after one alignment of the whole trajectory, in % of the GT path length (official
    ``compute_rte``): gt_root, pred_root [F, 3] → [F]. NaN everywhere when the GT path length is 0."""
    s, r, t = umeyama(gt_root, pred_root, fixed_scale=fixed_scale)
    err = np.sqrt(((gt_root - _apply_sim3(s, r, t, pred_root)) ** 2).sum(axis=-1))
    steps = np.sqrt(((gt_root[1:] - gt_root[:-1]) ** 2).sum(axis=-1))
    path = np.cumsum(steps)[-1] if steps.size else 0.0  # running sum, as the official loop adds step by step
    if not path > 0:
        return np.full(len(gt_root), np.nan, dtype=gt_root.dtype)
    return err / path * 1e2


def global_metrics(
    pred_j3d: np.ndarray,
    gt_j3d: np.ndarray,
    pred_v3d: np.ndarray,
    gt_v3d: np.ndarray,
    window: int = 100,
    fps: float = 30.0,
    dtype=np.float64,
) -> dict[str, np.ndarray]:
    """World-frame errors of one sequence's matched frames (official ``eval_global``, subsample 1).

    pred_j3d, gt_j3d [F, J, 3]; pred_v3d, gt_v3d [F, 6890, 3] (metres, matched frames concatenated in frame
    order). Returns per-frame arrays:
      "w_mpjpe" [F] (official wa2_mpjpe, mm): per window of ``window`` frames (last one shorter), a Sim(3) fitted
        on the window's first two frames (``first_align_joints``) applied to the whole window;
      "wa_mpjpe" [F] (waa_mpjpe, mm): per window, a Sim(3) fitted on all its frames (``global_align_joints``);
      "rte" [F] (%): rigid alignment of the joint-0 trajectory, error / total GT path length; NaN when that
        length is 0 (F < 2 or a motionless root; the official code returns inf/NaN there);
      "rte_scaled" [F] (%): the same with a Sim(3);
      "jitter" [max(F − 3, 0)]: ‖third difference‖ × fps³ of the predicted joints, mean over joints, / 10;
      "foot_sliding" [n_contacts] (mm): predicted displacement of the foot vertices over the (frame, vertex)
        pairs whose GT displacement is < 1 cm, in row-major order.
    """
    pj, gj, pv, gv = (np.asarray(a, dtype=dtype) for a in (pred_j3d, gt_j3d, pred_v3d, gt_v3d))
    n_frames = len(pj)
    mm = 1000
    w_mpjpe, wa_mpjpe = [np.zeros(0, dtype=dtype)], [np.zeros(0, dtype=dtype)]
    for start in range(0, n_frames, window):
        g, p = gj[start : start + window], pj[start : start + window]
        s, r, t = umeyama(g[:2].reshape(-1, 3), p[:2].reshape(-1, 3))
        w_mpjpe.append(_jpe(g, _apply_sim3(s, r, t, p)))
        s, r, t = umeyama(g.reshape(-1, 3), p.reshape(-1, 3))
        wa_mpjpe.append(_jpe(g, _apply_sim3(s, r, t, p)))

    if n_frames:
        rte = _rte(gj[:, 0], pj[:, 0], fixed_scale=True)
        rte_scaled = _rte(gj[:, 0], pj[:, 0], fixed_scale=False)
    else:
        rte = rte_scaled = np.zeros(0, dtype=dtype)

    # For F < 4 every slice is empty and so is the result, as in the official code.
    third_diff = (pj[3:] - 3 * pj[2:-1] + 3 * pj[1:-2] - pj[:-3]) * (fps**3)
    jitter = np.sqrt((third_diff**2).sum(axis=-1)).mean(axis=-1) / 10.0

    feet = list(FOOT_VERTICES)
    g_step = np.sqrt(((gv[1:, feet] - gv[:-1, feet]) ** 2).sum(axis=-1))  # [F-1, 4]
    p_step = np.sqrt(((pv[1:, feet] - pv[:-1, feet]) ** 2).sum(axis=-1))
    contact = g_step < 1e-2  # GT foot moves less than 1 cm between consecutive matched frames
    foot_sliding = p_step[contact] * mm

    return {
        "w_mpjpe": np.concatenate(w_mpjpe) * mm,
        "wa_mpjpe": np.concatenate(wa_mpjpe) * mm,
        "rte": rte,
        "rte_scaled": rte_scaled,
        "jitter": jitter,
        "foot_sliding": foot_sliding,
    }


# ----------------------------------------------------------------------------------------------------------------
# Per-sequence line and summary


def _mean_over_instances(arrays) -> float:
    """Plain mean of every value in a list of arrays, 0.0 when there is none (official ``avg_per_human``)."""
    flat = [np.ravel(np.asarray(a)) for a in arrays]
    values = np.concatenate(flat) if flat else np.zeros(0)
    return float(np.mean(values)) if values.size else 0.0


def _one_decimal(x: float) -> float:
    """The value as ``write_log`` prints it ('%.1f' of the float) and ``extract_metrics`` reads it back."""
    return float(f"{float(x):.1f}")


def sequence_metrics(
    counter: dict, per_instance: dict[str, list[np.ndarray]], global_: dict[str, np.ndarray] | None
) -> dict[str, float | int]:
    """One sequence's log line as the official ``write_log`` writes it, read back as numbers.

    counter: {"n_human": #matches, "count": #GT people, "miss": #missed GT, "fp": #false positives}, summed over
    frames (missing keys count 0, like the official ``Counter``). per_instance: ``CAMCOORD_KEYS`` → list of
    per-frame [M] arrays from ``camcoord_metrics``. global_: ``global_metrics`` output or None (3DPW / EMDB-1:
    global metrics are then 0.0, as printed officially). Each metric = plain mean over all instances (0.0 when
    none), then '%.1f'-rounded; P/R/F1 from ``prf1`` then '%.1f'-rounded. Also returns n_human, count, miss, fp.
    """
    row: dict[str, float | int] = {"n_human": int(counter.get("n_human", 0))}
    for key in CAMCOORD_KEYS:
        row[key] = _one_decimal(_mean_over_instances(per_instance.get(key, [])))
    for key in GLOBAL_KEYS:
        arrays = [global_[key]] if global_ is not None and key in global_ else []
        row[key] = _one_decimal(_mean_over_instances(arrays))
    count, miss, fp = (int(counter.get(k, 0)) for k in ("count", "miss", "fp"))
    precision, recall, f1 = prf1(count, miss, fp)
    row.update(precision=_one_decimal(precision), recall=_one_decimal(recall), f1=_one_decimal(f1))
    row.update(count=count, miss=miss, fp=fp)
    return row


def aggregate(rows: list[dict]) -> dict:
    """Dataset summary (official ``process_directory`` → ``extract_metrics`` → ``calculate_averages``).

    n_human-weighted mean of each rounded per-sequence value of ``SUMMARY_KEYS`` over the rows with n_human > 0,
    plus the total "n_human"; all 0 when no row qualifies. Rows with a non-finite value are left out, as the
    official regex does not parse the "nan"/"inf" such a line prints. Departure: each row counts once; the
    official summary re-parses every log in the output directory, so re-runs into it are double-counted.
    """
    kept = [r for r in rows if r["n_human"] > 0 and all(math.isfinite(r[k]) for k in SUMMARY_KEYS)]
    total = sum(int(r["n_human"]) for r in kept)
    out: dict = {"n_human": total}
    for key in SUMMARY_KEYS:
        out[key] = sum(r[key] * r["n_human"] for r in kept) / total if total else 0.0
    return out
