"""The chex shape and dtype checks at the public entry points: the model step, the training losses and
the batch entering the train step. They fail at trace time, so these tests compile nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from human3r_jax import checkpoint as ckpt
from human3r_jax import runtime
from human3r_jax.config import HUMAN3R_PRESETS
from human3r_jax.data.schema import STEP_KEYS, batch_spec
from human3r_jax.models.cut3r import Frame, make_frame
from human3r_jax.train import losses as L
from human3r_jax.train.config import TrainConfig
from human3r_jax.train.trainer import check_batch, make_train_step

H, W = 48, 64

# ---------------------------------------------------------------- the model step


def good_frame(b=1):
    return make_frame(jnp.zeros((b, H, W, 3), jnp.float32))


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (
            Frame(jnp.zeros((H, W, 3)), jnp.ones((1,), bool), jnp.zeros((1,), bool)),
            r"rank 3 .* expected 4.*frame\.img: expected one frame per batch element, \[B, H, W, 3\]",
        ),
        (Frame(jnp.zeros((1, 3, H, W)), jnp.ones((1,), bool), jnp.zeros((1,), bool)), r"frame\.img: expected RGB"),
        (
            Frame(jnp.zeros((1, H, W, 3), jnp.uint8), jnp.ones((1,), bool), jnp.zeros((1,), bool)),
            r"uint8 but expected .*float.*frame\.img: expected a float image",
        ),
        (
            good_frame()._replace(update=jnp.ones((1,), jnp.int32)),
            r"int32 but expected bool.*frame\.update: expected bool",
        ),
        (good_frame()._replace(reset=jnp.zeros((1,), jnp.float32)), r"frame\.reset: expected bool"),
        (good_frame()._replace(update=jnp.ones((1, 1), bool)), r"frame\.update: expected \[B=1\]"),
        (good_frame(2), r"frame\.img: its batch size differs from the carry's"),
        (
            good_frame(2)._replace(img=jnp.zeros((1, H, W, 3))),
            r"frame\.update: expected \[B=1\] \(the carry's batch size\)",
        ),
    ],
    ids=["rank", "channels", "dtype", "update-dtype", "reset-dtype", "update-shape", "batch", "flags-batch"],
)
def test_step_names_a_bad_frame(tiny_model, frame, match):
    _, graphdef, params = tiny_model
    carry = runtime.init_carry(graphdef, params, 1)
    with pytest.raises(AssertionError, match=match):
        runtime.step(graphdef, params, carry, frame)


def test_step_names_a_carry_of_another_batch(tiny_model):
    _, graphdef, params = tiny_model
    carry = runtime.init_carry(graphdef, params, 1)
    carry = carry._replace(t=jnp.zeros((2,), jnp.int32))
    with pytest.raises(AssertionError, match=r"carry: every leaf must lead with the batch axis B=1"):
        runtime.step(graphdef, params, carry, good_frame())


def test_human3r_step_checks_its_frame_too():
    """Human3r's own step reaches the checks through encode (the image) and update (the flags)."""
    graphdef, state = nnx.split(ckpt.abstract_model(HUMAN3R_PRESETS["human3r_tiny"]))
    run = lambda frame: jax.eval_shape(lambda s: (m := nnx.merge(graphdef, s)).step(m.init_carry(1), frame), state)
    run(good_frame())  # the checks pass a good frame
    with pytest.raises(AssertionError, match=r"frame\.img: expected one frame per batch element"):
        run(Frame(jnp.zeros((H, W, 3)), jnp.ones((1,), bool), jnp.zeros((1,), bool)))
    with pytest.raises(AssertionError, match=r"frame\.update: expected bool"):
        run(good_frame()._replace(update=jnp.ones((1,), jnp.int32)))


# ---------------------------------------------------------------- the training losses


def loss_inputs(b=1, v=2, h=4, w=6, m=2, g=2, r=4, j=3, n=5):
    """Small zero arrays with the shapes and dtypes total_loss reads. → (pred, tgt, batch)"""
    f = lambda *s: jnp.zeros(s, jnp.float32)
    batch = {
        "img": f(b, v, h, w, 3),
        "valid": jnp.ones((b, v, h, w), bool),
        "img_mask": jnp.ones((b, v), bool),
        "K": f(b, v, 3, 3),
    }
    tgt = {
        "smpl_mask": jnp.ones((b, v, m), bool),
        "pts_self": f(b, v, h, w, 3),
        "pts_cross": f(b, v, h, w, 3),
        "pose_t": f(b, v, 3),
        "pose_q": f(b, v, 4),
        "score_map": f(b, v, g, g),
        "msk": f(b, v, r, r, 1),
        "smpl_rotmat": f(b, v, m, 53, 3, 3),
        "smpl_betas": f(b, v, m, 11),
        "smpl_transl": f(b, v, m, 3),
        "smpl_pelvis": f(b, v, m, 3),
        "smpl_j3d": f(b, v, m, j, 3),
        "smpl_v3d": f(b, v, m, n, 3),
        "smpl_j2d": f(b, v, m, j, 2),
        "smpl_v2d": f(b, v, m, n, 2),
    }
    pred = {
        "pts3d_in_self_view": f(b, v, h, w, 3),
        "pts3d_in_other_view": f(b, v, h, w, 3),
        "rgb": f(b, v, h, w, 3),
        "conf_self": f(b, v, h, w),
        "conf": f(b, v, h, w),
        "camera_pose": f(b, v, 7),
        "smpl_rotmat": f(b, v, m, 53, 3, 3),
        "smpl_shape": f(b, v, m, 10),
        "smpl_expression": f(b, v, m, 10),
        "smpl_transl": f(b, v, m, 3),
        "smpl_scores": f(b, v, g, g),
        "msk": f(b, v, r, r, 1),
    }
    return pred, tgt, batch


def test_loss_checks_pass_consistent_inputs():
    pred, tgt, batch = loss_inputs()
    L.check_loss_inputs("total_loss", pred, tgt, batch, pose=True)
    no_mask = {k: x for k, x in pred.items() if k != "msk"}  # a model without the mask head
    L.check_loss_inputs("total_loss", no_mask, {k: x for k, x in tgt.items() if k != "msk"}, batch, pose=True)


@pytest.mark.parametrize(
    ("part", "key", "value", "match"),
    [
        ("pred", "conf", None, r"total_loss: pred lacks \['conf'\]"),
        ("tgt", "pose_q", None, r"total_loss: tgt lacks \['pose_q'\]"),
        ("batch", "valid", None, r"total_loss: batch lacks \['valid'\]"),
        (
            "pred",
            "conf",
            jnp.zeros((1, 2, 4, 7)),
            r"pred\['conf'\] must be float32 \[B, V, H, W\] with Dimensions\(.*W=6",
        ),
        (
            "pred",
            "pts3d_in_self_view",
            jnp.zeros((1, 2, 4, 6)),
            r"rank 4 .*pred\['pts3d_in_self_view'\] must be float32",
        ),
        ("pred", "smpl_shape", jnp.zeros((1, 2, 2, 11)), r"pred\['smpl_shape'\] must be float32 \[B, V, M, S\]"),
        ("pred", "rgb", jnp.zeros((1, 2, 4, 6, 3), jnp.bfloat16), r"bfloat16 but expected float32.*pred\['rgb'\]"),
        ("tgt", "smpl_mask", jnp.ones((1, 2, 2), jnp.float32), r"tgt\['smpl_mask'\] must be bool \[B, V, M\]"),
        ("tgt", "smpl_j2d", jnp.zeros((1, 2, 3, 3, 2)), r"tgt\['smpl_j2d'\] must be float32 \[B, V, M, J, 2\]"),
        ("batch", "img", jnp.zeros((1, 2, 4, 6)), r"rank 4 .*batch\['img'\] must be float32 \[B, V, H, W, 3\]"),
    ],
)
def test_total_loss_names_a_bad_input(part, key, value, match):
    pred, tgt, batch = loss_inputs()
    tree = {"pred": pred, "tgt": tgt, "batch": batch}[part]
    if value is None:
        del tree[key]
    else:
        tree[key] = value
    with pytest.raises(AssertionError, match=match):
        L.total_loss(None, pred, tgt, batch)  # the checks come first: the body model is never reached


def test_eval_loss_reads_no_pose_terms():
    pred, tgt, batch = loss_inputs()
    for k in ("conf", "conf_self", "camera_pose"):
        del pred[k]
    del tgt["pose_t"], tgt["pose_q"]
    L.check_loss_inputs("eval_loss", pred, tgt, batch, pose=False)
    del pred["rgb"]
    with pytest.raises(AssertionError, match=r"eval_loss: pred lacks \['rgb'\]"):
        L.eval_loss(None, pred, tgt, batch)


# ---------------------------------------------------------------- the batch entering the train step


def step_batch(b=2, v=2, m=3, h=8, w=12) -> dict:
    spec = batch_spec(b, v, m)
    return {
        k: np.zeros([{2: h, 3: w}.get(i, d) if d is None else d for i, d in enumerate(spec[k][1])], spec[k][0])
        for k in STEP_KEYS
    }


def test_batch_check_passes_the_schema():
    check_batch(step_batch(), 2, 2, 3)
    check_batch(step_batch(b=4, v=3), None, None, 3)  # B and V from img


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda b: b.pop("valid"), r"batch lacks \['valid'\]: a step reads"),
        (lambda b: b.update(K=np.zeros((2, 2, 3, 4), np.float32)), r"batch\['K'\] must be float32 \[2, 2, 3, 3\]"),
        (lambda b: b.update(img_mask=np.ones((2, 2), np.float32)), r"float32 but expected bool.*batch\['img_mask'\]"),
        (lambda b: b.update(depth=np.zeros((2, 2, 8, 13), np.float32)), r"batch\['depth'\] must be .*H×W=8×12 of img"),
        (
            lambda b: b.update(smpl_mask=np.zeros((2, 2, 4), bool)),
            r"batch\['smpl_mask'\] must be bool \[2, 2, 3\].*M=3",
        ),
        (lambda b: b.update(img=np.zeros((2, 3, 8, 12, 3), np.float32)), r"batch\['img'\] .* V=2"),
        (lambda b: b.update(img=np.zeros((2, 2, 8, 12), np.float32)), r"batch\['img'\] must be \[B, V, H, W, 3\]"),
    ],
    ids=["missing", "shape", "dtype", "width", "slots", "views", "rank"],
)
def test_train_step_names_a_bad_batch(change, match):
    batch = step_batch()
    change(batch)
    with pytest.raises(AssertionError, match=match):
        check_batch(batch, 2, 2, 3)
    # the step checks before anything else: no model, state or optimizer is needed to see it
    cfg = TrainConfig(model="human3r_tiny", batch_size=2, num_views=2, max_humans=3)
    step = make_train_step(cfg, HUMAN3R_PRESETS["human3r_tiny"], None, None)
    with pytest.raises(AssertionError, match=match):
        jax.eval_shape(lambda b: step(None, None, None, None, b), batch)
