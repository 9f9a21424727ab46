"""Ground truth of a training batch, completed on the accelerator (the official `update_smpl_gt`).

The pipeline delivers depth, cameras and SMPL-X parameters; here they become what the losses
compare against:
  * point maps in each view's camera (self) and in view 0's camera (cross), and the camera of each
    view relative to view 0 as (t, q real-first);
  * bodies from the SMPL-X forward (neutral, 11 betas, zero expression, flat hands): vertices,
    127 joints, the head joint (the person centre), the pelvis, their projections with the view's
    intrinsics, and the 53 rotations in Human3R's order;
  * the head cells on the human-prior grid (head projected with the letter-boxed intrinsics,
    14-px cells), which also prune the slots: a person whose head falls outside the grid, or into a
    cell a closer person (an earlier slot) already holds, is dropped;
  * the detection map (1 at the kept cells) and the human mask on the padded square (> 0.1).

Shapes: B batch, V views, M slots, g the prior grid, R = g·14 the padded square.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from human3r_jax.data.schema import POSE_KEYS
from human3r_jax.geometry import inverse_rigid, matrix_to_quat, project, rotvec_to_rotmat
from human3r_jax.models.letterbox import pad_image
from human3r_jax.models.smplx import HEAD, SmplxModel, smplx_forward


def depth_to_points(depth, K):
    """depth [..., H, W], K [..., 3, 3] → camera-frame points [..., H, W, 3] (pixel (u, v) at column u, row v)."""
    h, w = depth.shape[-2:]
    v, u = jnp.meshgrid(jnp.arange(h, dtype=depth.dtype), jnp.arange(w, dtype=depth.dtype), indexing="ij")
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    return jnp.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], axis=-1)


def square_intrinsics(K, h: int, w: int, res: int):
    """Intrinsics of the res×res letter-boxed image as the official `resize_camera_intrinsics`: the
    principal point scaled by res/W and res/H, the focal divided by max(H, W)/res."""
    s = max(h, w) / res
    row0 = jnp.stack([K[..., 0, 0] / s, K[..., 0, 1], K[..., 0, 2] / w * res], -1)
    row1 = jnp.stack([K[..., 1, 0], K[..., 1, 1] / s, K[..., 1, 2] / h * res], -1)
    return jnp.stack([row0, row1, K[..., 2, :]], -2)


def scene_targets(batch):
    """Point maps and relative cameras. → pts_self, pts_cross [B, V, H, W, 3], pose_t [B, V, 3],
    pose_q [B, V, 4] (view i's camera in view 0's frame)."""
    pts_self = depth_to_points(batch["depth"], batch["K"])
    to_first = inverse_rigid(batch["c2w"][:, :1]) @ batch["c2w"]  # [B, V, 4, 4]
    pts_cross = jnp.einsum("bvij,bvhwj->bvhwi", to_first[..., :3, :3], pts_self) + to_first[:, :, None, None, :3, 3]
    return {
        "pts_self": pts_self,
        "pts_cross": pts_cross,
        "pose_t": to_first[..., :3, 3],
        "pose_q": matrix_to_quat(to_first[..., :3, :3]),
    }


def smpl_rotations(batch):
    """GT axis-angles → (SMPL-X order [..., 55, 3, 3], Human3R order [..., 53, 3, 3])."""
    aa = {k: batch[k].reshape(batch[k].shape[:3] + (-1, 3)) for k in POSE_KEYS}
    smplx_order = jnp.concatenate([aa[k] for k in POSE_KEYS], axis=-2)  # POSE_KEYS are in SMPL-X joint order
    human3r_order = jnp.concatenate(
        [
            aa["smpl_root_pose"],
            aa["smpl_body_pose"],
            aa["smpl_left_hand_pose"],
            aa["smpl_right_hand_pose"],
            aa["smpl_jaw_pose"],
        ],
        axis=-2,
    )
    return rotvec_to_rotmat(smplx_order), rotvec_to_rotmat(human3r_order)


def keep_first_per_cell(cells, in_grid):
    """Slots in order claim cells: a slot is kept if it is in the grid and no earlier kept slot of the
    same image holds its cell. cells [N, M] int, in_grid [N, M] bool → kept [N, M] bool."""
    m = cells.shape[-1]
    kept = []
    for j in range(m):  # M is small and static (10)
        taken = jnp.zeros_like(in_grid[:, 0])
        for k in range(j):
            taken = taken | (kept[k] & (cells[:, k] == cells[:, j]))
        kept.append(in_grid[:, j] & ~taken)
    return jnp.stack(kept, axis=-1)


def human_targets(body_model: SmplxModel, batch, img_res: int, patch: int):
    """SMPL-X ground truth, head cells, detection map and padded mask (see the module docstring)."""
    b, v, m = batch["smpl_mask"].shape
    h, w = batch["img"].shape[2:4]
    g = img_res // patch
    n = b * v * m
    rot55, rot53 = smpl_rotations(batch)
    betas = batch["smpl_betas"]
    expression = jnp.zeros((n, body_model.num_expression), jnp.float32)
    body = smplx_forward(body_model, betas.reshape(n, -1), expression, rot55.reshape(n, 55, 3, 3))
    transl = batch["smpl_transl"].reshape(n, 1, 3)
    verts = (body.vertices + transl).reshape(b, v, m, -1, 3)
    joints = (body.joints + transl).reshape(b, v, m, -1, 3)
    head = joints[..., HEAD, :]
    K = jnp.broadcast_to(batch["K"][:, :, None], (b, v, m, 3, 3))
    K_sq = square_intrinsics(K, h, w, img_res)
    uv_sq = project(head[..., None, :], K_sq)[..., 0, :]
    col = jnp.floor(uv_sq[..., 0] / patch).astype(jnp.int32)
    row = jnp.floor(uv_sq[..., 1] / patch).astype(jnp.int32)
    in_grid = batch["smpl_mask"] & (row >= 0) & (row < g) & (col >= 0) & (col < g)
    cells = jnp.where(in_grid, row * g + col, 0)
    mask = keep_first_per_cell(cells.reshape(b * v, m), in_grid.reshape(b * v, m)).reshape(b, v, m)
    cells = jnp.where(mask, cells, 0)
    score_map = (
        jnp.zeros((b * v, g * g), jnp.float32)
        .at[jnp.arange(b * v)[:, None], cells.reshape(b * v, m)]
        .max(mask.reshape(b * v, m).astype(jnp.float32))
        .reshape(b, v, g, g)
    )
    msk = pad_image(batch["human_mask"].reshape(b * v, h, w, 1), img_res, value=0.0)
    msk = (msk > 0.1).astype(jnp.float32).reshape(b, v, img_res, img_res, 1)
    z = lambda x: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 3)), x, 0)
    return {
        "smpl_mask": mask,
        "smpl_cell": cells,
        "smpl_rotmat": z(rot53),
        "smpl_betas": z(betas),
        "smpl_transl": z(head),
        "smpl_pelvis": z(joints[..., 0, :]),
        "smpl_j3d": z(joints),
        "smpl_v3d": z(verts),
        "smpl_j2d": z(project(joints, K)),
        "smpl_v2d": z(project(verts, K)),
        "score_map": score_map,
        "msk": msk,
    }


def complete_targets(body_model: SmplxModel, batch, img_res: int, patch: int):
    """All targets of a batch (no gradient flows into them)."""
    return jax.lax.stop_gradient({**scene_targets(batch), **human_targets(body_model, batch, img_res, patch)})
