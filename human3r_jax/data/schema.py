"""The training batch's schema: its keys, dtypes and shapes, the official resolutions and the split
names. A leaf module (numpy only), so that the trainer and its config can name the batch without
importing the data pipeline; `bedlam` builds batches of this schema (its docstring describes each key).
"""

from __future__ import annotations

import numpy as np

OFFICIAL_RESOLUTIONS = ((512, 384), (512, 336), (512, 288), (512, 256), (512, 208), (512, 144),
                        (384, 512), (336, 512), (288, 512), (256, 512))  # (W, H)

SPLITS = {"train": "Training", "test": "Test", "Training": "Training", "Test": "Test"}

# batch key → (file key, shape of one person)
SMPL_KEYS = {
    "smpl_root_pose": ("smplx_root_pose", (3,)),
    "smpl_body_pose": ("smplx_body_pose", (21, 3)),
    "smpl_jaw_pose": ("smplx_jaw_pose", (3,)),
    "smpl_leye_pose": ("smplx_leye_pose", (3,)),
    "smpl_reye_pose": ("smplx_reye_pose", (3,)),
    "smpl_left_hand_pose": ("smplx_left_hand_pose", (15, 3)),
    "smpl_right_hand_pose": ("smplx_right_hand_pose", (15, 3)),
    "smpl_betas": ("smplx_shape", (11,)),
    "smpl_transl": ("smplx_transl", (3,)),
}

# The keys the train step reads; a batch's frame_ids, seq_index and step are bookkeeping and stay on the host.
STEP_KEYS = ("img", "ray_map", "img_mask", "ray_mask", "depth", "valid", "K", "c2w", "human_mask", "smpl_mask",
             *SMPL_KEYS)


def batch_spec(batch_size: int | None, num_views: int, max_humans: int = 10) -> dict[str, tuple[type, tuple]]:
    """Batch key → (dtype, shape) with None for the per-batch H and W."""
    B, V, M, H, W = batch_size, num_views, max_humans, None, None
    spec = {
        "img": (np.float32, (B, V, H, W, 3)), "ray_map": (np.float32, (B, V, H, W, 6)),
        "img_mask": (np.bool_, (B, V)), "ray_mask": (np.bool_, (B, V)),
        "depth": (np.float32, (B, V, H, W)), "valid": (np.bool_, (B, V, H, W)),
        "K": (np.float32, (B, V, 3, 3)), "c2w": (np.float32, (B, V, 4, 4)),
        "human_mask": (np.float32, (B, V, H, W)), "smpl_mask": (np.bool_, (B, V, M)),
    }
    spec.update({key: (np.float32, (B, V, M, *shape)) for key, (_, shape) in SMPL_KEYS.items()})
    spec.update(frame_ids=(np.int32, (B, V)), seq_index=(np.int32, (B,)), step=(np.int64, ()))
    return spec
