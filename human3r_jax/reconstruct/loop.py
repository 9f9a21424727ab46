"""The streaming run: sequences of one model resolution step together (batch axis = sequence, split over
the local devices), each frame's camera, depth, world points and people fetched and handed to its writer.

    run(model, sources, writers, settings, smplx)   the loop; returns timing
    _float32(out)                                   the step's floating outputs in float32 (bfloat16 models)
    _frame_geometry(pose, pts_self, base, k, …)     chained (or static) c2w, focal, given K, world points (jitted)
    _bodies_world(smplx, out, c2w)                  world-frame SMPL-X vertices and joints of every slot (jitted)
    _mesh_and_sharding(batch)                       the batch's sharding over the local devices
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from human3r_jax import cameras, export, runtime
from human3r_jax.data.video import FrameSource
from human3r_jax.geometry import pose_to_c2w, transform_points
from human3r_jax.models import state_update as su
from human3r_jax.models.cut3r import Frame, StepOptions
from human3r_jax.reconstruct.reader import _Reader
from human3r_jax.reconstruct.settings import LoadedModel, Settings
from human3r_jax.reconstruct.writer import SequenceWriter


@functools.partial(jax.jit, static_argnames="static")
def _frame_geometry(pose, pts_self, base, k=None, transl=None, static=False):
    """One batch of frames' cameras and points (base [B, 4, 4]: the segment bases) → raw c2w, c2w, the
    estimated focal [B], the camera-frame points [B, H, W, 3], the heads [B, S, 3] and the world points.

    Given intrinsics k [B, 3, 3] (model input) replace the estimate: each pixel keeps its depth and is
    re-derived through k, each head (transl, smpl_transl) keeps its depth and the pixel it has under the
    estimated K. static: every c2w is the identity (world = the camera's frame)."""
    raw = pose_to_c2w(pose)
    c2w = jnp.broadcast_to(jnp.eye(4, dtype=raw.dtype), raw.shape) if static else base @ raw
    focal = runtime.estimate_focal(pts_self)
    if k is not None:
        h, w = pts_self.shape[1:3]
        pts_self = cameras.points_from_depth(pts_self[..., 2], k)
        transl = None if transl is None else cameras.move_heads(transl, focal, k, h, w)
    return raw, c2w, focal, pts_self, transl, transform_points(c2w, pts_self)


@jax.jit
def _bodies_world(smplx, out, c2w):
    """World-frame SMPL-X vertices [B, S, V, 3] and joints [B, S, 127, 3] of every slot (out: the step's
    outputs, c2w [B, 4, 4])."""
    return runtime.slot_bodies(smplx, out, c2w)[1]


# A Human3R frame's people as its writer gets them: the slot mask, the per-person fields of every slot, the count.
_HUMAN_KEYS = ("smpl_valid", *export.PERSON_FIELDS, "n_detected")
# What a frame's files need from the step's outputs (the rest stays on the device).
_FETCHED = ("pts3d_in_self_view", "conf_self", *_HUMAN_KEYS)


def _mesh_and_sharding(batch: int):
    """Split the batch over the local devices when it divides evenly (else one device); in a multi-process
    run each process runs its own inputs on its own devices."""
    devices = jax.local_devices()
    n = max(d for d in range(1, len(devices) + 1) if batch % d == 0)
    if n == 1:
        return None
    mesh = jax.sharding.Mesh(np.asarray(devices[:n]), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))


def run(
    model: LoadedModel,
    sources: Sequence[FrameSource],
    writers: Sequence[SequenceWriter],
    settings: Settings,
    smplx=None,
    on_frame: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    prep: Callable | None = None,
) -> dict:
    """Run sequences of one model resolution together (batch axis = sequence). Returns timing.

    Each writer's `add(raw, img, res)` gets its sequence's frames (see `SequenceWriter.add`), as does
    `on_frame(j, res)`. `prep(raw_frame) -> [H, W, 3]` replaces the demo's `preprocess` (the evaluation's
    own frame loader; not with settings.intrinsics, which are mapped through the demo's resize and crop)."""
    b = len(sources)
    rule = settings.state_update
    if rule is None:  # the user-level --ttt3r picks a built-in rule
        rule = su.ttt3r if settings.ttt3r else su.cut3r
    opts = StepOptions(rgb=False, cross=False, state_update=rule)
    sharding = _mesh_and_sharding(b)
    params = model.params
    carry = runtime.init_carry(model.graphdef, params, b)
    if sharding is not None:
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        params = jax.device_put(params, replicated)
        carry = jax.device_put(carry, sharding)
    put = (lambda x: jax.device_put(x, sharding)) if sharding is not None else jnp.asarray
    readers = [_Reader(s, settings.size, prep=prep, drop=settings.drop_frames) for s in sources]
    iters = [iter(r) for r in readers]
    last = [None] * b
    live = [True] * b
    base = np.tile(np.eye(4, dtype=np.float32), (b, 1, 1))
    given_k = None if settings.intrinsics is None else cameras.parse_intrinsics(settings.intrinsics)
    lengths = [s.length for s in sources]  # None: a live source
    total = None if None in lengths else max(lengths)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc="reconstruct", dynamic_ncols=True)
    forward, t_start, t_first, i = [], time.perf_counter(), None, 0
    try:
        while True:
            items = []
            for j in range(b):
                item = next(iters[j], None) if live[j] else None
                if item is None:
                    live[j] = False
                    item = last[j]
                items.append(item)
                last[j] = item
            if not any(live):
                break
            imgs = np.stack([it[1] for it in items])
            update = np.asarray(live)
            reset = np.full(b, bool(settings.reset_interval) and (i + 1) % settings.reset_interval == 0)
            frame = Frame(put(imgs), put(update), put(reset))
            t0 = time.perf_counter()
            carry, out = runtime.step(model.graphdef, params, carry, frame, opts)
            out = _float32(out)
            k = None if given_k is None else _model_k(given_k, items, settings.size)
            raw_c2w, c2w, focal, pts, transl, world = _frame_geometry(
                out["camera_pose"],
                out["pts3d_in_self_view"],
                jnp.asarray(base),
                None if k is None else put(k),
                None if k is None else out.get("smpl_transl"),
                static=settings.static_camera,
            )
            if k is not None:  # the outputs the bodies and the frame files take
                out = {**out, "pts3d_in_self_view": pts, **({"smpl_transl": transl} if transl is not None else {})}
            bodies = _bodies_world(smplx, out, c2w) if (smplx is not None and model.humans) else None
            if reset[0]:  # the official duplicate: same frame, fresh state, outputs dropped
                duplicate = Frame(frame.img, frame.update, put(~reset))
                carry, _ = runtime.step(model.graphdef, params, carry, duplicate, opts)
            res = jax.device_get(
                {
                    **{k: out[k] for k in _FETCHED if k in out},
                    "c2w": c2w,
                    "raw_c2w": raw_c2w,
                    "focal": focal,
                    "world": world,
                    **({"verts": bodies.vertices, "joints": bodies.joints} if bodies is not None else {}),
                }
            )
            forward.append(time.perf_counter() - t0)
            if reset[0]:
                base = np.einsum("bij,bjk->bik", base, res["raw_c2w"]).astype(np.float32)
            h, w = imgs.shape[1:3]
            for j in range(b):
                if not live[j]:
                    continue
                r = {
                    "c2w": res["c2w"][j],
                    "intrinsics": k[j] if k is not None else runtime.intrinsics(res["focal"][j : j + 1], h, w)[0],
                    "depth": res["pts3d_in_self_view"][j, ..., 2],
                    "conf": res["conf_self"][j],
                    "pts3d_world": res["world"][j],
                }
                if model.humans:
                    r.update({k: res[k][j] for k in _HUMAN_KEYS})
                    if "verts" in res:
                        r["smpl_verts_world"] = res["verts"][j]
                        r["smpl_joints_world"] = res["joints"][j]
                writers[j].add(items[j][0], items[j][1], r)
                if on_frame is not None:
                    on_frame(j, r)
            i += 1
            if t_first is None:
                t_first = time.perf_counter()  # the first frame includes compilation
            if bar is not None:
                bar.update(1)
                rate = (i - 1) / (time.perf_counter() - t_first) if i > 1 else 0.0
                bar.set_postfix(fps=f"{rate:.2f}", humans=_humans_str(res, live))
    finally:
        for r in readers:
            r.close()
        if bar is not None:
            bar.close()
    steady = i - 1  # frames after the first (compiling) one
    wall = time.perf_counter() - (t_first or t_start)
    return {
        "frames": i,
        "first_frame_s": (t_first or t_start) - t_start,
        "forward_s_per_frame": float(np.mean(forward[1:])) if steady > 0 else None,
        "end_to_end_s_per_frame": wall / steady if steady > 0 else None,
        "dropped_frames": [r.dropped for r in readers],
    }


def _float32(out: dict) -> dict:
    """The step's floating outputs in float32: a bfloat16 model's geometry, bodies and files stay float32."""
    return {
        k: v.astype(jnp.float32) if jnp.issubdtype(v.dtype, jnp.floating) and v.dtype != jnp.float32 else v
        for k, v in out.items()
    }


def _model_k(given_k: np.ndarray, items: list, size: int) -> np.ndarray:
    """The given K [F or 1, 3, 3] (input pixels) of each sequence's current frame → K [B, 3, 3] of the model
    input (float32)."""
    return np.stack([cameras.model_intrinsics(given_k, raw, size) for raw, _ in items]).astype(np.float32)


def _humans_str(res, live):
    """The progress bar's people count of each live sequence."""
    if "smpl_valid" not in res:
        return "-"
    return ",".join(str(int(v.sum())) for v, alive in zip(res["smpl_valid"], live) if alive)
