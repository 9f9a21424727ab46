"""Running a model over frames: the jitted step, the jitted scan over a sequence, the official
`reset_interval` view duplication, and the demo's post-processing (pose chaining, focal, world points,
the people's SMPL-X bodies in the camera and world frames).

    step(graphdef, params, carry, frame, opts)   -> (carry, outputs)        one frame, jitted
    run_sequence(graphdef, params, carry, frames, opts) -> (carry, outputs) `lax.scan` over views
    slot_bodies(smplx, slots, c2w)               -> (camera, world) bodies  every slot of F frames
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from human3r_jax.geometry import pose_to_c2w, rotmat_to_rotvec, transform_points
from human3r_jax.models.cut3r import Carry, Frame, StepOptions
from human3r_jax.models.letterbox import unpad_image
from human3r_jax.models.smplx import SmplxOutput, bodies_in_camera, to_world


@functools.partial(jax.jit, static_argnums=(0, 4))
def step(graphdef, params, carry: Carry, frame: Frame, opts: StepOptions = StepOptions()):
    """One online step (compiled once per graphdef, options and input shape)."""
    return nnx.merge(graphdef, params).step(carry, frame, opts)


@functools.partial(jax.jit, static_argnums=(0, 4))
def run_sequence(graphdef, params, carry: Carry, frames: Frame, opts: StepOptions = StepOptions()):
    """`lax.scan` of `step` over views: frames.img [T, B, H, W, 3], flags [T, B]; outputs stacked on T."""
    model = nnx.merge(graphdef, params)
    return jax.lax.scan(lambda c, f: model.step(c, f, opts), carry, frames)


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_carry(graphdef, params, batch: int = 1) -> Carry:
    return nnx.merge(graphdef, params).init_carry(batch)


# ---------------------------------------------------------------- reset_interval


def reset_views(n_frames: int, reset_interval: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The official view list for `reset_interval` R: frame i gets reset = ((i+1) mod R == 0) and is
    followed by a duplicate of itself with reset = False, which starts the new segment.

    Returns (frame index of each view [V], reset flag of each view [V]).
    """
    idx, reset = [], []
    for i in range(n_frames):
        r = bool(reset_interval) and (i + 1) % reset_interval == 0
        idx.append(i)
        reset.append(r)
        if r:
            idx.append(i)
            reset.append(False)
    return np.asarray(idx, np.int64), np.asarray(reset, bool)


def kept_views(reset: np.ndarray) -> np.ndarray:
    """Indices of the views the demo keeps: every view except the one right after a reset view."""
    reset = np.asarray(reset, bool)
    after = np.concatenate([[False], reset[:-1]])
    return np.nonzero(~after)[0]


# ---------------------------------------------------------------- post-processing


def chain_segments(c2w: np.ndarray, reset: np.ndarray) -> np.ndarray:
    """World poses across resets: pose_k ← B_k · pose_k, B_k = product of the poses of all reset
    views before k (c2w and reset are over the kept views, in order)."""
    out = np.array(c2w, copy=True)
    base = np.eye(4, dtype=out.dtype)
    for k in range(len(out)):
        out[k] = base @ c2w[k]
        if reset[k]:
            base = base @ c2w[k]
    return out


@jax.jit
def estimate_focal(pts3d):
    """Focal (pixels) from a self-view point map [B, H, W, 3] with the principal point at
    (W//2, H//2): least squares then 10 Weiszfeld iterations, as the official post-processing."""
    b, h, w, _ = pts3d.shape
    pp = jnp.asarray([w // 2, h // 2], jnp.float32)
    xs, ys = jnp.meshgrid(jnp.arange(w, dtype=jnp.float32), jnp.arange(h, dtype=jnp.float32))
    pixels = (jnp.stack([xs, ys], -1) - pp).reshape(1, -1, 2)
    pts = pts3d.reshape(b, -1, 3)
    xy = jnp.nan_to_num(pts[..., :2] / pts[..., 2:3], nan=0.0, posinf=0.0, neginf=0.0)
    dot_xy_px = (xy * pixels).sum(-1)
    dot_xy_xy = (xy * xy).sum(-1)
    focal = dot_xy_px.mean(1) / dot_xy_xy.mean(1)
    for _ in range(10):
        dis = jnp.linalg.norm(pixels - focal[:, None, None] * xy, axis=-1)
        wgt = 1.0 / jnp.maximum(dis, 1e-8)
        focal = (wgt * dot_xy_px).mean(1) / (wgt * dot_xy_xy).mean(1)
    return jnp.maximum(focal, 0.0)


def intrinsics(focal: np.ndarray, h: int, w: int) -> np.ndarray:
    k = np.zeros((len(focal), 3, 3), np.float32)
    k[:, 0, 0] = k[:, 1, 1] = focal
    k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = w // 2, h // 2, 1
    return k


def postprocess(camera_pose, pts3d_self, reset, chain: bool = True):
    """The demo's `prepare_output` on per-view outputs [V, …] → per-frame camera and world points.

    chain=True is Human3R's version (drops each reset's duplicate view, chains the segments);
    chain=False is CUT3R's (keeps every view, no chaining).
    """
    reset = np.asarray(reset, bool)
    keep = kept_views(reset) if chain else np.arange(len(reset))
    c2w = np.asarray(pose_to_c2w(jnp.asarray(camera_pose)[keep]))
    if chain:
        c2w = chain_segments(c2w, reset[keep])
    pts = jnp.asarray(pts3d_self)[keep]
    focal = np.asarray(estimate_focal(pts))
    h, w = pts.shape[1:3]
    return {
        "view_index": keep,
        "c2w": c2w,
        "focal": focal,
        "pp": np.tile(np.asarray([w // 2, h // 2], np.float32), (len(keep), 1)),
        "intrinsics": intrinsics(focal, h, w),
        "pts3d_world": np.asarray(transform_points(jnp.asarray(c2w), pts)),
    }


# The per-slot outputs that make a body, in the order of `bodies_in_camera`'s arguments.
BODY_KEYS = ("smpl_shape", "smpl_expression", "smpl_rotmat", "smpl_transl")


def slot_bodies(smplx, slots: dict, c2w) -> tuple[SmplxOutput, SmplxOutput]:
    """The SMPL-X bodies of every slot of F frames, in each frame's camera and in the world (jit-able).

    slots: the BODY_KEYS outputs smpl_shape [F, S, 10], smpl_expression [F, S, 10], smpl_rotmat [F, S, 53, 3, 3]
    and smpl_transl [F, S, 3] (empty slots too: mask them yourself); c2w [F, 4, 4] the frames' cameras.
    Returns (camera, world) SmplxOutput with vertices [F, S, 10475, 3] and joints [F, S, 127, 3].
    """
    f, s = np.shape(slots["smpl_transl"])[:2]
    flat = [jnp.asarray(slots[k]).reshape((f * s,) + np.shape(slots[k])[2:]) for k in BODY_KEYS]
    cam = bodies_in_camera(smplx, *flat)
    world = to_world(cam, jnp.repeat(jnp.asarray(c2w, jnp.float32), s, axis=0))
    return tuple(SmplxOutput(*(x.reshape(f, s, -1, 3) for x in body)) for body in (cam, world))


def postprocess_humans(out: dict, view_index: np.ndarray, c2w: np.ndarray, hw: tuple[int, int], smplx=None) -> dict:
    """Per-frame human results of the kept views (`view_index`, world poses `c2w` [F, 4, 4]).

    out: per-view model outputs [V, …] (batch axis dropped). Returns n_humans [F], smpl_id [F, S]
    (−1 for empty slots), smpl_rotvec [F, S, 53, 3], msk [F, H, W] (the mask un-padded to the image)
    and, with an SMPL-X model, verts/joints in the camera and world frames [F, S, ·, 3] (zeros in
    empty slots).
    """
    valid = np.asarray(out["smpl_valid"])[view_index]
    res = {
        "n_humans": valid.sum(1),
        "smpl_id": np.where(valid, np.asarray(out["smpl_id"])[view_index], -1),
        "smpl_rotvec": np.where(
            valid[..., None, None], np.asarray(rotmat_to_rotvec(jnp.asarray(out["smpl_rotmat"])[view_index])), 0
        ),
    }
    if "msk" in out:
        res["msk"] = np.asarray(unpad_image(jnp.asarray(out["msk"])[view_index], *hw))[..., 0]
    if smplx is not None:
        slots = {k: jnp.asarray(out[k])[view_index] for k in BODY_KEYS}
        m = valid[..., None, None]
        for name, body in zip(("cam", "world"), slot_bodies(smplx, slots, c2w)):
            res[f"smpl_verts_{name}"] = np.where(m, np.asarray(body.vertices), 0)
            res[f"smpl_joints_{name}"] = np.where(m, np.asarray(body.joints), 0)
        res["smplx_faces"] = np.asarray(smplx.faces)
    return res
