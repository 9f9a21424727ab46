"""One multi-view sample with the official `BEDLAM_Multi` semantics: which frames (the stride rule),
which inputs each view gives the model, the people in the SMPL-X slots, the ray maps, and `load_sample`,
which assembles the arrays (the batch schema of `schema.batch_spec` without the leading B axis).
"""

from __future__ import annotations

import numpy as np

from human3r_jax.data.bedlam.augment import color_jitter, crop_resize, img_norm, jitter_params
from human3r_jax.data.bedlam.errors import DataError
from human3r_jax.data.bedlam.index import BedlamIndex
from human3r_jax.data.bedlam.readers import read_camera, read_depth, read_mask, read_rgb, read_smpl
from human3r_jax.data.schema import SMPL_KEYS

MIN_HUMAN_DEPTH = 0.01  # people must be in front of the camera
MAX_INTERVAL = 4  # largest stride between views, in preprocessed (6 fps) frames
VIEW_INPUT_P = (0.85, 0.00, 0.15)  # views > 0: image only / ray map only / both

# ---------------------------------------------------------------- view sampling


def sample_frame_positions(num_frames: int, start: int, num_views: int, rng: np.random.Generator) -> list[int]:
    """Positions (in a sequence of `num_frames`) of the views of a sample starting at `start`.

    The official rule (`get_seq_from_start_id` with video_prob = fix_interval_prob = 1):
    with r = num_frames − 1 − start frames after the start and r ≥ num_views − 1, the views are
    start + k·s with one stride s uniform in [1, min(MAX_INTERVAL, r // (num_views − 1))].
    A shorter tail (possible as starts only need 2 frames after them) re-draws the start a uniform in
    [0, start], takes u = r frames a + k·s with s uniform in [1, min(MAX_INTERVAL, (num_frames − 1 − a)
    // (u − 1))], and repeats them cyclically: e.g. [a, a+s, a, a+s] for 4 views.
    """
    remaining = num_frames - 1 - start
    if remaining < 2:
        raise ValueError(f"start {start} leaves {remaining} frame(s) after it; need 2")
    if remaining >= num_views - 1:
        stride = int(rng.integers(1, min(MAX_INTERVAL, remaining // (num_views - 1)) + 1))
        return [start + k * stride for k in range(num_views)]
    unique = remaining
    a = int(rng.integers(0, start + 1))
    stride = int(rng.integers(1, min(MAX_INTERVAL, (num_frames - 1 - a) // (unique - 1)) + 1))
    pos = [a + k * stride for k in range(unique)]
    return [pos[k % unique] for k in range(num_views)]


def view_input_masks(view: int, rng: np.random.Generator) -> tuple[bool, bool]:
    """(img_mask, ray_mask): view 0 gives its image only; later views image only, ray map only or both
    with the official probabilities (BEDLAM is metric, so the ray map may be given)."""
    if view == 0:
        return True, False
    r = rng.random()
    if r < VIEW_INPUT_P[0]:
        return True, False
    if r < VIEW_INPUT_P[0] + VIEW_INPUT_P[1]:
        return False, True
    return True, True


# ---------------------------------------------------------------- people and rays


def select_humans(people: dict[str, np.ndarray], max_humans: int) -> dict[str, np.ndarray]:
    """Drop people with transl z ≤ MIN_HUMAN_DEPTH, sort the rest by increasing z (stable), keep the
    first `max_humans` in slots: batch key → [max_humans, *shape] (zeros past the last) + smpl_mask."""
    z = people["smpl_transl"][:, 2]
    keep = np.flatnonzero(z > MIN_HUMAN_DEPTH)
    keep = keep[np.argsort(z[keep], kind="stable")][:max_humans]
    out = {}
    for key, (_, shape) in SMPL_KEYS.items():
        slots = np.zeros((max_humans, *shape), np.float32)
        slots[: len(keep)] = people[key][keep]
        out[key] = slots
    out["smpl_mask"] = np.arange(max_humans) < len(keep)
    return out


def ray_map(c2w_ref: np.ndarray, c2w: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [H, W, 6]: the official ray map of a view relative to view 0 (origin, unit direction).

    With T = inv(c2w_ref) · c2w and d = K⁻¹ (u, v, 1) at integer pixel (u, v), origin = T's
    translation and direction = normalise(R d + t): the official code maps d as a point, translation
    included, so directions of views other than the reference are not pure rotations of d.
    Inputs are rounded to float32 first, as the official views hold them.
    """
    T = (np.linalg.inv(c2w_ref.astype(np.float32)) @ c2w.astype(np.float32)).astype(np.float64)
    M = T[:3, :3] @ np.linalg.inv(K.astype(np.float32)).astype(np.float64)  # pixel → direction, one 3×3
    out = np.empty((height, width, 6), np.float32)
    out[..., :3] = T[:3, 3]
    d = (
        np.arange(height, dtype=np.float64)[:, None, None] * M[:, 1]
        + np.arange(width, dtype=np.float64)[None, :, None] * M[:, 0]
        + (M[:, 2] + T[:3, 3])
    )
    out[..., 3:] = d / np.sqrt(np.einsum("hwc,hwc->hw", d, d))[..., None]
    return out


# ---------------------------------------------------------------- one sample


def load_sample(
    index: BedlamIndex,
    rng: np.random.Generator,
    resolution: tuple[int, int],
    *,
    aug_crop: int = 16,
    max_humans: int = 10,
    jitter: bool = True,
) -> dict[str, np.ndarray]:
    """One multi-view sample at resolution (W, H): the batch schema without the leading B axis (and
    without `step`). Every random choice comes from `rng`, in a fixed order, so equal generator states
    give equal samples: a start frame uniform over `index.num_starts`, the views
    (`sample_frame_positions`), one colour jitter for all views, then per view the crop enlargement
    (0 … aug_crop − 1 px) and the input masks."""
    width, height = resolution
    seq_idx, start = index.locate(int(rng.integers(index.num_starts)))
    seq = index.sequences[seq_idx]
    positions = sample_frame_positions(len(seq.frames), start, index.num_views, rng)
    colour = jitter_params(rng) if jitter else None  # one draw shared by all views (SeqColorJitter)

    views = []
    for v, pos in enumerate(positions):
        frame = seq.frames[pos]
        rgb_path = seq.path / "rgb" / f"{frame}.png"
        rgb = read_rgb(rgb_path)
        mask = read_mask(seq.path / "mask" / f"{frame}.png")
        if mask.size != rgb.size:
            raise DataError(f"{seq.path / 'mask' / frame}.png: mask is {mask.size}, its image {rgb.size}")
        depth = read_depth(seq.path / "depth" / f"{frame}.npy", rgb.size[::-1])
        K, c2w = read_camera(seq.path / "cam" / f"{frame}.npz")
        humans = select_humans(read_smpl(seq.path / "smpl", frame), max_humans)

        enlarge = int(rng.integers(0, aug_crop)) if aug_crop > 1 else 0
        rgb, depth, mask, K = crop_resize(rgb, depth, mask, K, resolution, enlarge, name=str(rgb_path))
        img_mask, ray_mask = view_input_masks(v, rng)
        if colour is not None:
            rgb = color_jitter(rgb, colour)
        views.append(
            dict(
                img=img_norm(rgb),
                depth=depth,
                valid=depth > 0,
                K=K.astype(np.float32),
                c2w=c2w.astype(np.float32),
                human_mask=(np.asarray(mask, np.float32) / np.float32(255) > 0.5).astype(np.float32),
                img_mask=np.bool_(img_mask),
                ray_mask=np.bool_(ray_mask),
                frame_ids=np.int32(pos),
                **humans,
            )
        )

    for view in views:
        view["ray_map"] = ray_map(views[0]["c2w"], view["c2w"], view["K"], height, width)
    sample = {k: np.stack([view[k] for view in views]) for k in views[0]}
    sample["seq_index"] = np.int32(seq_idx)
    return sample
