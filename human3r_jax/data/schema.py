"""The formats of the training data, each defined once: the preprocessed BEDLAM layout (its subfolders,
the camera and SMPL-X label files), the training batch (keys, dtypes, shapes), the official resolutions
and the split names. A leaf module (numpy only), so that the trainer and its config can name the batch
without importing the data pipeline.

The preprocessed layout, written by `bedlam_preprocess` and `synthetic`, read by `bedlam`::

    <root>/{Training,Test}/<scene>_<seq>/<subfolder>/<frame>.<ext>   (SUBFOLDERS)
        rgb/<frame>.png      RGB image
        depth/<frame>.npy    float32 [H, W] metres
        mask/<frame>.png     uint8 [H, W], 255 = human
        cam/<frame>.npz      CAMERA_SPEC: intrinsics [3, 3], pose [4, 4] camera-to-world (OpenCV axes)
        smpl/<frame>.npz     label_spec(P): P ≥ 0 people, float32 [P, *shape] per SMPL_KEYS file key

The batch (`batch_spec`; B batch, V views, M = max_humans slots, H×W the batch's resolution)::

    img                 float32 [B, V, H, W, 3]   ImgNorm'd to [-1, 1] after colour jitter (channels last)
    ray_map             float32 [B, V, H, W, 6]   ray origin (3) and unit direction (3) in view 0's camera
    img_mask, ray_mask  bool    [B, V]            which inputs the model sees for each view
    depth               float32 [B, V, H, W]      metres, 0 where invalid
    valid               bool    [B, V, H, W]      depth > 0
    K                   float32 [B, V, 3, 3]      intrinsics after crop/resize
    c2w                 float32 [B, V, 4, 4]      camera-to-world
    human_mask          float32 [B, V, H, W]      0/1
    smpl_mask           bool    [B, V, M]         slot holds a person (slots sorted by increasing depth)
    smpl_*              float32 [B, V, M, *shape] the SMPL_KEYS batch keys (axis-angle poses, betas,
                                                  transl in the camera frame, m); zeros in empty slots
    frame_ids           int32   [B, V]            position of each view's frame in its sequence
    seq_index           int32   [B]               index into `BedlamIndex.sequences`
    step                int64   []                the batch number
"""

from __future__ import annotations

import numpy as np

OFFICIAL_RESOLUTIONS = (
    (512, 384),
    (512, 336),
    (512, 288),
    (512, 256),
    (512, 208),
    (512, 144),
    (384, 512),
    (336, 512),
    (288, 512),
    (256, 512),
)  # (W, H)

SPLITS = {"train": "Training", "test": "Test", "Training": "Training", "Test": "Test"}

# ---------------------------------------------------------------- the preprocessed layout

SUBFOLDERS = ("rgb", "depth", "mask", "cam", "smpl")

# cam/<frame>.npz: key → (dtype, shape) as written; the pipeline reads any finite float
CAMERA_SPEC = {"intrinsics": (np.float32, (3, 3)), "pose": (np.float32, (4, 4))}

NUM_BETAS = 11  # BEDLAM's SMPL-X shape coefficients (the neutral model)

# One person's SMPL-X parameters: batch key → (key in smpl/<frame>.npz, shape of one person). The poses
# are axis-angle in SMPL-X joint order (root, 21 body joints, jaw, left and right eye, 15 + 15 hand joints).
SMPL_KEYS = {
    "smpl_root_pose": ("smplx_root_pose", (3,)),
    "smpl_body_pose": ("smplx_body_pose", (21, 3)),
    "smpl_jaw_pose": ("smplx_jaw_pose", (3,)),
    "smpl_leye_pose": ("smplx_leye_pose", (3,)),
    "smpl_reye_pose": ("smplx_reye_pose", (3,)),
    "smpl_left_hand_pose": ("smplx_left_hand_pose", (15, 3)),
    "smpl_right_hand_pose": ("smplx_right_hand_pose", (15, 3)),
    "smpl_betas": ("smplx_shape", (NUM_BETAS,)),
    "smpl_transl": ("smplx_transl", (3,)),
}
POSE_KEYS = tuple(k for k in SMPL_KEYS if k.endswith("_pose"))  # batch keys, SMPL-X joint order


def label_spec(num_people: int) -> dict[str, tuple[type, tuple]]:
    """smpl/<frame>.npz key → (dtype, shape) for a frame of `num_people` people."""
    return {file_key: (np.float32, (num_people, *shape)) for file_key, shape in SMPL_KEYS.values()}


# ---------------------------------------------------------------- the batch

# The keys the train step reads; a batch's frame_ids, seq_index and step are bookkeeping and stay on the host.
STEP_KEYS = (
    "img",
    "ray_map",
    "img_mask",
    "ray_mask",
    "depth",
    "valid",
    "K",
    "c2w",
    "human_mask",
    "smpl_mask",
    *SMPL_KEYS,
)


def batch_spec(batch_size: int | None, num_views: int, max_humans: int = 10) -> dict[str, tuple[type, tuple]]:
    """Batch key → (dtype, shape) with None for the per-batch H and W (see the module docstring)."""
    B, V, M, H, W = batch_size, num_views, max_humans, None, None
    spec = {
        "img": (np.float32, (B, V, H, W, 3)),
        "ray_map": (np.float32, (B, V, H, W, 6)),
        "img_mask": (np.bool_, (B, V)),
        "ray_mask": (np.bool_, (B, V)),
        "depth": (np.float32, (B, V, H, W)),
        "valid": (np.bool_, (B, V, H, W)),
        "K": (np.float32, (B, V, 3, 3)),
        "c2w": (np.float32, (B, V, 4, 4)),
        "human_mask": (np.float32, (B, V, H, W)),
        "smpl_mask": (np.bool_, (B, V, M)),
    }
    spec.update({key: (np.float32, (B, V, M, *shape)) for key, (_, shape) in SMPL_KEYS.items()})
    spec.update(frame_ids=(np.int32, (B, V)), seq_index=(np.int32, (B,)), step=(np.int64, ()))
    return spec
