"""The official training losses (`src/dust3r/losses.py` of the official code), as pure functions of arrays.

total = ConfLoss(Regr3DPoseBatchList(L21, '?avg_dis'), α=0.2) + RGBLoss(MSE) + SMPLLoss(L1)

Every "mean" below is over the elements a mask selects, as PyTorch's `x[mask].mean()`, and an
empty selection counts 0 (the official `if numel > 0 else 0`). Per-view terms are averaged over
the V views, empty views included, as the official `sum(ls) / len(ls)`.

Arrays: B batch, V views, H×W image, M human slots, g prior grid, R padded square.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from human3r_jax.geometry import project
from human3r_jax.models.smplx import SmplxModel, bodies_in_camera

EPS = 1e-3  # Regr3DPose's eps: norm-factor floor and confidence-log floor
SMPL_WEIGHTS = {
    "scores": 0.1,
    "msk": 1.0,
    "rotmat": 1.0,
    "shape": 0.1,
    "transl": 1.0,
    "j3d": 1.0,
    "v3d": 1.0,
    "cj3d": 1.0,
    "cv3d": 1.0,
    "j2d": 0.01,
    "v2d": 0.01,
}


# ---------------------------------------------------------------- input checks

F32, BOOL = jnp.float32, jnp.bool_
# What the public losses read: key → (axes, dtype). Letters are dimensions (B batch, V views, H×W image,
# M slots, G prior grid, R padded square, J joints, N vertices, P = 53 Human3R rotations, S = 10 predicted
# betas), digits literal sizes and * any size. The heads and losses run in float32 whatever the compute dtype.
BATCH_AXES = {"img": ("BVHW3", F32), "valid": ("BVHW", BOOL), "img_mask": ("BV", BOOL), "K": ("BV33", F32)}
TARGET_AXES = {
    "smpl_mask": ("BVM", BOOL),
    "pts_self": ("BVHW3", F32),
    "pts_cross": ("BVHW3", F32),
    "score_map": ("BVGG", F32),
    "smpl_rotmat": ("BVMP33", F32),
    "smpl_betas": ("BVM*", F32),
    "smpl_transl": ("BVM3", F32),
    "smpl_pelvis": ("BVM3", F32),
    "smpl_j3d": ("BVMJ3", F32),
    "smpl_v3d": ("BVMN3", F32),
    "smpl_j2d": ("BVMJ2", F32),
    "smpl_v2d": ("BVMN2", F32),
}
PRED_AXES = {
    "pts3d_in_self_view": ("BVHW3", F32),
    "pts3d_in_other_view": ("BVHW3", F32),
    "rgb": ("BVHW3", F32),
    "smpl_rotmat": ("BVMP33", F32),
    "smpl_shape": ("BVMS", F32),
    "smpl_expression": ("BVM*", F32),
    "smpl_transl": ("BVM3", F32),
    "smpl_scores": ("BVGG", F32),
}
# The confidence and pose terms (training only), and the mask head's output when the model has one.
PRED_POSE_AXES = {"conf_self": ("BVHW", F32), "conf": ("BVHW", F32), "camera_pose": ("BV7", F32)}
TARGET_POSE_AXES = {"pose_t": ("BV3", F32), "pose_q": ("BV4", F32)}
MASK_AXES = {"msk": ("BVRR1", F32)}


def check_tree(fn: str, name: str, tree, axes: dict, dims: chex.Dimensions) -> None:
    """Every key of `axes` in `tree` with its dtype and shape (binding `dims` letters not bound yet);
    at trace time under jit. An AssertionError names the function, the key and what was expected."""
    missing = [k for k in axes if k not in tree]
    if missing:
        raise AssertionError(f"{fn}: {name} lacks {missing} (it has {sorted(tree)})")
    for k, (spec, dtype) in axes.items():
        x = tree[k]
        what = f"{fn}: {name}[{k!r}] must be {jnp.dtype(dtype).name} [{', '.join(spec)}]"
        chex.assert_rank(x, len(spec), custom_message=what)
        known = {a for a in spec if a.isalpha() and getattr(dims, a, None) is not None}
        first = [a if a.isalpha() and a not in known and a not in spec[:i] else "_" for i, a in enumerate(spec)]
        dims["".join(first)] = x.shape
        chex.assert_shape(x, dims[spec], custom_message=f"{what} with {dims}")
        chex.assert_type(x, dtype, custom_message=what)


def check_loss_inputs(fn: str, pred, tgt, batch, pose: bool) -> None:
    """The predictions, targets and batch a public loss reads (pose: the confidence and pose terms)."""
    dims = chex.Dimensions(P=53, S=10)
    mask = MASK_AXES if "msk" in pred else {}
    check_tree(fn, "batch", batch, BATCH_AXES, dims)
    check_tree(fn, "tgt", tgt, {**TARGET_AXES, **(TARGET_POSE_AXES if pose else {}), **mask}, dims)
    check_tree(fn, "pred", pred, {**PRED_AXES, **(PRED_POSE_AXES if pose else {}), **mask}, dims)


def masked_mean(x, mask):
    """Mean of x over the elements where `mask` (broadcast to x) holds; 0 for an empty mask."""
    mask = jnp.broadcast_to(mask, x.shape)
    n = mask.sum().astype(x.dtype)
    return jnp.where(n > 0, jnp.where(mask, x, 0).sum() / jnp.maximum(n, 1), 0.0)


def per_view(fn, *arrays):
    """fn applied to each view (axis 1) → [V]."""
    return jax.vmap(fn, in_axes=1)(*arrays)


# ---------------------------------------------------------------- point maps and cameras


def norm_factor(gt_self, gt_cross, valid, conf_self, conf_cross):
    """'avg_dis' scale of each sample [B]: the mean distance of the valid GT points of every view,
    self and cross, weighted by the detached log-confidence (≥ 1e-3); floored at 1e-3."""
    w_self = jnp.clip(jnp.log(jax.lax.stop_gradient(conf_self)), EPS, None)
    w_cross = jnp.clip(jnp.log(jax.lax.stop_gradient(conf_cross)), EPS, None)
    w = jnp.where(valid, w_self, 0) + jnp.where(valid, w_cross, 0)
    d = jnp.where(valid, w_self, 0) * jnp.linalg.norm(jnp.where(valid[..., None], gt_self, 0), axis=-1) + jnp.where(
        valid, w_cross, 0
    ) * jnp.linalg.norm(jnp.where(valid[..., None], gt_cross, 0), axis=-1)
    axes = tuple(range(1, valid.ndim))
    f = d.sum(axes) / (w.sum(axes) + 1e-8)
    return jnp.clip(jnp.clip(f, 1e-8, None), EPS, None)


def conf_regression(pred_pts, conf, gt_pts, valid, f, alpha: float):
    """Per view [V]: mean over valid pixels (all samples) of c·‖P̂/f − P/f‖ − α·log c."""
    scale = f[:, None, None, None, None]
    err = jnp.linalg.norm(pred_pts / scale - gt_pts / scale, axis=-1)
    return per_view(lambda e, c, m: masked_mean(e * c - alpha * jnp.log(c), m), err, conf, valid)


def pose_loss(pred_pose, gt_t, gt_q, f, img_mask_last):
    """mean‖t̂/f − t/f‖ + mean‖q̂ − q‖ over the samples whose scale exceeds 1e-3 (and whose last view
    has an image, the official mask), all views."""
    keep = (f > EPS) & img_mask_last  # [B]
    t_err = jnp.linalg.norm(pred_pose[..., :3] / f[:, None, None] - gt_t / f[:, None, None], axis=-1)
    q_err = jnp.linalg.norm(pred_pose[..., 3:7] - gt_q, axis=-1)
    return masked_mean(t_err, keep[:, None]) + masked_mean(q_err, keep[:, None])


def pointmap_loss(pred, tgt, valid, img_mask, alpha: float = 0.2):
    """ConfLoss(Regr3DPoseBatchList(L21, '?avg_dis'), α): 2 × the mean of the 2V confidence-weighted
    terms (self and cross) + the pose loss. BEDLAM is metric, so GT and prediction share the GT scale."""
    f = norm_factor(tgt["pts_self"], tgt["pts_cross"], valid, pred["conf_self"], pred["conf"])
    self_terms = conf_regression(pred["pts3d_in_self_view"], pred["conf_self"], tgt["pts_self"], valid, f, alpha)
    cross_terms = conf_regression(pred["pts3d_in_other_view"], pred["conf"], tgt["pts_cross"], valid, f, alpha)
    pose = pose_loss(pred["camera_pose"], tgt["pose_t"], tgt["pose_q"], f, img_mask[:, -1])
    total = 2.0 * jnp.concatenate([self_terms, cross_terms]).mean() + pose
    return total, {
        "pts_self": self_terms.mean(),
        "pts_cross": cross_terms.mean(),
        "pose": pose,
        "norm_factor": f.mean(),
    }


def rgb_loss(pred_rgb, img):
    """MSE between the rgb head and the [-1, 1] input, averaged over views."""
    return per_view(lambda p, g: jnp.mean((p - g) ** 2), pred_rgb, img).mean()


# ---------------------------------------------------------------- humans


def focal_loss(pred, gt, select):
    """CornerNet focal loss (α=2, β=4) of score maps pred [N, g, g] against binary gt, over the
    maps `select` [N] picks: −(Σ pos + Σ neg)/#pos, or −Σ neg without positives."""
    sel = select[:, None, None]
    pos = (gt == 1) & sel
    neg = (gt < 1) & sel
    pos_l = jnp.where(pos, jnp.log(pred + 1e-7) * (1 - pred) ** 2, 0).sum()
    neg_l = jnp.where(neg, jnp.log(1 - pred + 1e-7) * pred**2 * (1 - gt) ** 4, 0).sum()
    n_pos = pos.sum().astype(pred.dtype)
    return jnp.where(n_pos > 0, -(pos_l + neg_l) / jnp.maximum(n_pos, 1), -neg_l)


def bce(pred, gt, select):
    """Binary cross-entropy (logs floored at −100, as PyTorch) averaged over the maps `select` picks."""
    ll = gt * jnp.maximum(jnp.log(pred), -100.0) + (1 - gt) * jnp.maximum(jnp.log(1 - pred), -100.0)
    return masked_mean(-ll, select.reshape(select.shape + (1,) * (ll.ndim - 1)))


def l1_per_view(pred, gt, mask):
    """Per view [V]: mean |pred − gt| over the elements of the selected humans. mask [B, V, M]."""
    m = mask.reshape(mask.shape + (1,) * (pred.ndim - 3))
    return per_view(masked_mean, jnp.abs(pred - gt), m)


def predicted_bodies(body_model: SmplxModel, pred, K):
    """The official SMPL_Layer on the predictions: bodies with rotation 0 as the global orientation,
    the head at `smpl_transl`, projected with the view's intrinsics. → dict of [B, V, M, ...]."""
    b, v, m = pred["smpl_transl"].shape[:3]
    n = b * v * m
    betas = pred["smpl_shape"].reshape(n, -1)
    # The 10 predicted betas on an 11-beta model: a zero 11th coefficient is the 10-beta model.
    betas = jnp.pad(betas, ((0, 0), (0, body_model.num_betas - betas.shape[-1])))
    body = bodies_in_camera(
        body_model,
        betas,
        pred["smpl_expression"].reshape(n, -1),
        pred["smpl_rotmat"].reshape(n, 53, 3, 3),
        pred["smpl_transl"].reshape(n, 3),
    )
    verts, joints = (x.reshape(b, v, m, -1, 3) for x in body)
    Km = jnp.broadcast_to(K[:, :, None], (b, v, m, 3, 3))
    return {
        "j3d": joints,
        "v3d": verts,
        "pelvis": joints[..., 0, :],
        "j2d": project(joints, Km),
        "v2d": project(verts, Km),
    }


def smpl_loss(body_model: SmplxModel, pred, tgt, img_mask, hw):
    """SMPLLoss(L1) with the official weights (scale 0.01 applied; see SMPL_WEIGHTS).

    The detection term is reported and added without gradient (the classifier is frozen). The 2-D
    terms count only GT points strictly inside the image and are added only when cv3d < 1.
    """
    h, w = hw
    mask = img_mask[:, :, None] & tgt["smpl_mask"]
    bodies = predicted_bodies(body_model, pred, tgt["K"])
    scores = jax.lax.stop_gradient(
        per_view(lambda p, g, s: focal_loss(p, g, s), pred["smpl_scores"], tgt["score_map"], img_mask).mean()
    )
    terms = {"scores": scores}
    if "msk" in pred:
        terms["msk"] = per_view(bce, pred["msk"], tgt["msk"], img_mask).mean()
    terms["rotmat"] = l1_per_view(pred["smpl_rotmat"], tgt["smpl_rotmat"], mask).mean()
    terms["shape"] = l1_per_view(pred["smpl_shape"][..., :10], tgt["smpl_betas"][..., :10], mask).mean()
    terms["transl"] = l1_per_view(pred["smpl_transl"], tgt["smpl_transl"], mask).mean()
    rel = lambda x, p: x - p[..., None, :]
    terms["j3d"] = l1_per_view(
        rel(bodies["j3d"], bodies["pelvis"]), rel(tgt["smpl_j3d"], tgt["smpl_pelvis"]), mask
    ).mean()
    terms["v3d"] = l1_per_view(
        rel(bodies["v3d"], bodies["pelvis"]), rel(tgt["smpl_v3d"], tgt["smpl_pelvis"]), mask
    ).mean()
    terms["cj3d"] = l1_per_view(bodies["j3d"], tgt["smpl_j3d"], mask).mean()
    terms["cv3d"] = l1_per_view(bodies["v3d"], tgt["smpl_v3d"], mask).mean()
    for k in ("j2d", "v2d"):
        g = tgt[f"smpl_{k}"]
        inside = (g[..., 0] > 0) & (g[..., 0] < w) & (g[..., 1] > 0) & (g[..., 1] < h) & mask[..., None]
        terms[k] = per_view(masked_mean, jnp.abs(bodies[k] - g), inside[..., None]).mean()
    gate = terms["cv3d"] < 1.0
    total = sum(SMPL_WEIGHTS[k] * v for k, v in terms.items() if k not in ("j2d", "v2d"))
    total = total + jnp.where(gate, SMPL_WEIGHTS["j2d"] * terms["j2d"] + SMPL_WEIGHTS["v2d"] * terms["v2d"], 0.0)
    return total, terms


# ---------------------------------------------------------------- the official test criterion


def lower_median(x, mask, axis: int):
    """torch.nanmedian over `axis` of the elements `mask` keeps (the others as NaN): the lower of
    the two middle values for an even count, NaN where none is kept."""
    x = jnp.sort(jnp.where(mask, x, jnp.nan), axis=axis)  # NaNs sort last
    n = mask.sum(axis=axis, keepdims=True)
    picked = jnp.take_along_axis(x, jnp.maximum((n - 1) // 2, 0), axis=axis)
    return jnp.squeeze(jnp.where(n > 0, picked, jnp.nan), axis)


def group_scale(pts, valid):
    """get_group_pointcloud_center_scale: per sample, the median distance of the valid points of all
    views to their per-coordinate median. pts [B, V, H, W, 3], valid [B, V, H, W] → [B]."""
    b = pts.shape[0]
    flat, m = pts.reshape(b, -1, 3), valid.reshape(b, -1)
    centre = lower_median(flat, m[..., None], axis=1)  # [B, 3]
    return lower_median(jnp.linalg.norm(flat - centre[:, None], axis=-1), m, axis=1)


def regression_sum(pred_self, pred_cross, tgt, valid):
    """Regr3DPose(L21, gt_scale=True, sky_loss_value=0) with its 'mean' reduction: the sum of the 2V
    per-view means of ‖P̂ − P‖ over the valid pixels of all samples (metres; no pose term)."""
    dist = lambda p, g: per_view(masked_mean, jnp.linalg.norm(p - g, axis=-1), valid)
    return (dist(pred_self, tgt["pts_self"]) + dist(pred_cross, tgt["pts_cross"])).sum()


def eval_loss(body_model: SmplxModel, pred, tgt, batch):
    """The official test criterion (config test_criterion) and its parts:
    Regr3DPose(L21, '?avg_dis', gt_scale=True, sky_loss_value=0)
    + Regr3DPose_ScaleInv(same): the prediction rescaled by gt scale / predicted scale (group_scale,
      self and cross apart, the predicted one clipped to [1e-3, 1e3])
    + RGBLoss(L21): per-pixel ‖rgb − img‖, averaged over views
    + SMPLLoss(L1), as in training."""
    check_loss_inputs("eval_loss", pred, tgt, batch, pose=False)
    valid = batch["valid"]
    p_self, p_cross = pred["pts3d_in_self_view"], pred["pts3d_in_other_view"]
    regr = regression_sum(p_self, p_cross, tgt, valid)
    rescale = lambda p, g: (
        p * (group_scale(g, valid) / jnp.clip(group_scale(p, valid), 1e-3, 1e3))[:, None, None, None, None]
    )
    regr_si = regression_sum(rescale(p_self, tgt["pts_self"]), rescale(p_cross, tgt["pts_cross"]), tgt, valid)
    rgb = per_view(lambda p, g: jnp.mean(jnp.linalg.norm(p - g, axis=-1)), pred["rgb"], batch["img"]).mean()
    smpl, smpl_terms = smpl_loss(body_model, pred, {**tgt, "K": batch["K"]}, batch["img_mask"], batch["img"].shape[2:4])
    total = regr + regr_si + rgb + smpl
    return total, dict(
        loss=total,
        loss_regr=regr,
        loss_regr_scale_inv=regr_si,
        loss_rgb=rgb,
        loss_smpl=smpl,
        **{f"smpl_{k}": v for k, v in smpl_terms.items()},
    )


def total_loss(body_model: SmplxModel, pred, tgt, batch, alpha: float = 0.2):
    """The training objective and its parts (a flat dict of scalars for logging)."""
    check_loss_inputs("total_loss", pred, tgt, batch, pose=True)
    pts, pts_terms = pointmap_loss(pred, tgt, batch["valid"], batch["img_mask"], alpha)
    rgb = rgb_loss(pred["rgb"], batch["img"])
    smpl, smpl_terms = smpl_loss(body_model, pred, {**tgt, "K": batch["K"]}, batch["img_mask"], batch["img"].shape[2:4])
    total = pts + rgb + smpl
    details = dict(
        loss=total,
        loss_pts=pts,
        loss_rgb=rgb,
        loss_smpl=smpl,
        **pts_terms,
        **{f"smpl_{k}": v for k, v in smpl_terms.items()},
    )
    return total, details
