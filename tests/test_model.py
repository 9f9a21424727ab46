"""The recurrence: scan ≡ step-by-step, state updates, resets and TTT3R (tiny random model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close, rel_l2
from flax import nnx

from human3r_jax import checkpoint as ckpt
from human3r_jax import geometry, runtime
from human3r_jax.models import state_update as su
from human3r_jax.models.cut3r import Frame, StepOptions, make_frame

H, W = 48, 64


def frames(n, seed=0, update=None, reset=None):
    img = np.random.default_rng(seed).uniform(-1, 1, size=(n, 1, H, W, 3)).astype(np.float32)
    update = np.ones((n, 1), bool) if update is None else np.asarray(update, bool).reshape(n, 1)
    reset = np.zeros((n, 1), bool) if reset is None else np.asarray(reset, bool).reshape(n, 1)
    return Frame(jnp.asarray(img), jnp.asarray(update), jnp.asarray(reset))


def step_by_step(graphdef, params, fr: Frame, opts):
    carry = runtime.init_carry(graphdef, params, 1)
    outs = []
    for t in range(fr.img.shape[0]):
        carry, o = runtime.step(graphdef, params, carry, Frame(fr.img[t], fr.update[t], fr.reset[t]), opts)
        outs.append(o)
    return carry, jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


@pytest.mark.parametrize("ttt3r", [False, True])
def test_scan_equals_step_by_step(tiny_model, ttt3r):
    _, graphdef, params = tiny_model
    fr = frames(4, update=[1, 0, 1, 1], reset=[0, 1, 0, 0])
    opts = StepOptions(state_update=su.ttt3r if ttt3r else su.cut3r, taps=True)
    c1, o1 = step_by_step(graphdef, params, fr, opts)
    c2, o2 = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 1), fr, opts)
    assert_trees_close(c1, c2, rtol=1e-5, atol=1e-6)
    assert_trees_close(o1, o2, rtol=1e-5, atol=1e-6)


def test_state_update_mask_and_reset(tiny_model):
    _, graphdef, params = tiny_model
    fr = frames(4, update=[1, 0, 1, 1], reset=[0, 0, 1, 0])
    _, out = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 1), fr, StepOptions(taps=True))
    t = jax.tree.map(np.asarray, out["taps"])
    init = np.asarray(runtime.init_carry(graphdef, params, 1).state)
    np.testing.assert_array_equal(t["state_in"][0], init)
    np.testing.assert_array_equal(t["state_out"][0], t["state_candidate"][0])  # update: s ← ŝ
    np.testing.assert_array_equal(t["state_out"][1], t["state_in"][1])  # update=False: s kept
    np.testing.assert_array_equal(t["mem_out"][1], t["mem_in"][1])
    np.testing.assert_array_equal(t["state_out"][2], init)  # reset after the frame's own outputs …
    assert not np.allclose(t["state_candidate"][2], init)  # … which were computed with the old state
    np.testing.assert_array_equal(t["state_in"][3], init)


@pytest.mark.parametrize("after_reset_token", [True, False])
def test_pose_query_after_reset(tiny_model, after_reset_token):
    _cfg, graphdef, params = tiny_model
    fr = frames(4, reset=[0, 1, 0, 0])
    opts = StepOptions(pose_token_after_reset=after_reset_token, taps=True)
    _, out = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 1), fr, opts)
    q = np.asarray(out["taps"]["pose_query"])[:, 0]
    token = np.asarray(nnx.merge(graphdef, params).pose_token[...])[0, 0]
    np.testing.assert_array_equal(q[0], token)  # frame 0 always starts from the pose token
    assert not np.allclose(q[1], token)  # otherwise a memory read
    assert np.array_equal(q[2], token) == after_reset_token  # the frame after a reset: loop-dependent
    assert not np.allclose(q[3], token)


def test_ttt3r_gate(tiny_model):
    _, graphdef, params = tiny_model
    fr = frames(4)
    _, plain = runtime.run_sequence(
        graphdef, params, runtime.init_carry(graphdef, params, 1), fr, StepOptions(taps=True)
    )
    _, ttt = runtime.run_sequence(
        graphdef, params, runtime.init_carry(graphdef, params, 1), fr, StepOptions(state_update=su.ttt3r, taps=True)
    )
    p, t = jax.tree.map(np.asarray, plain["taps"]), jax.tree.map(np.asarray, ttt["taps"])
    # frame 0: full update in both; frames after: s ← β·ŝ + (1−β)·s with β ∈ (0, 1) per state token
    np.testing.assert_allclose(t["state_out"][0], p["state_out"][0], rtol=1e-6)
    s_in, cand, s_out = t["state_in"][1, 0], t["state_candidate"][1, 0], t["state_out"][1, 0]
    beta = ((s_out - s_in) / (cand - s_in)).mean(-1)
    assert np.all((beta > 0) & (beta < 1))
    np.testing.assert_allclose(s_out, cand * beta[:, None] + s_in * (1 - beta[:, None]), rtol=1e-4, atol=1e-5)
    assert not np.allclose(t["state_out"][1], p["state_out"][1])
    np.testing.assert_array_equal(
        t["mem_out"][1], p["mem_out"][1] if np.array_equal(t["mem_in"][1], p["mem_in"][1]) else t["mem_candidate"][1]
    )  # the memory keeps the plain update


def test_heads_off_change_nothing_else(tiny_model):
    _, graphdef, params = tiny_model
    carry = runtime.init_carry(graphdef, params, 1)
    f = make_frame(frames(1).img[0])
    _, full = runtime.step(graphdef, params, carry, f, StepOptions())
    _, lean = runtime.step(graphdef, params, carry, f, StepOptions(rgb=False, cross=False))
    assert set(full) - set(lean) == {"rgb", "pts3d_in_other_view", "conf"}
    for k in lean:
        np.testing.assert_array_equal(np.asarray(lean[k]), np.asarray(full[k]))


def test_batch_elements_are_independent(tiny_model):
    _, graphdef, params = tiny_model
    fr = frames(4, seed=1)
    fr2 = frames(4, seed=2, reset=[0, 1, 0, 0])
    both = Frame(*(jnp.concatenate([a, b], axis=1) for a, b in zip(fr, fr2)))
    opts = StepOptions(taps=True)
    _, o = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 2), both, opts)
    _, o1 = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 1), fr, opts)
    _, o2 = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 1), fr2, opts)
    for o_ in (o, o1, o2):
        o_.pop("taps")
    # Batching changes float32 summation order, which the encoder's emulated float16 rounding of
    # q, k can amplify at rounding boundaries: compare at the parity tolerance (relative L2 1e-4).
    for k in o:
        assert rel_l2(o[k][:, :1], o1[k]) < 1e-4, k
        assert rel_l2(o[k][:, 1:], o2[k]) < 1e-4, k


def test_reset_views_and_chaining():
    idx, reset = runtime.reset_views(7, 3)
    np.testing.assert_array_equal(idx, [0, 1, 2, 2, 3, 4, 5, 5, 6])
    np.testing.assert_array_equal(reset, [0, 0, 1, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(runtime.kept_views(reset), [0, 1, 2, 4, 5, 6, 8])
    idx, reset = runtime.reset_views(4, None)
    assert list(idx) == [0, 1, 2, 3] and not reset.any()
    rng = np.random.default_rng(0)
    poses = np.stack([np.eye(4) + 0.1 * rng.normal(size=(4, 4)) for _ in range(5)])
    poses[:, 3] = [0, 0, 0, 1]
    flags = np.array([0, 1, 0, 1, 0], bool)
    chained = runtime.chain_segments(poses, flags)
    np.testing.assert_allclose(chained[0], poses[0])
    np.testing.assert_allclose(chained[2], poses[1] @ poses[2])
    np.testing.assert_allclose(chained[4], poses[1] @ poses[3] @ poses[4])


def test_pose_to_c2w_is_a_rigid_transform():
    q = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
    pose = jnp.concatenate([jnp.ones((6, 3), jnp.float32), q], axis=-1)
    m = np.asarray(geometry.pose_to_c2w(pose))
    r = m[:, :3, :3]
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1, atol=1e-5)
    np.testing.assert_array_equal(m[:, 3], np.broadcast_to([0, 0, 0, 1], (6, 4)))


def test_focal_recovers_a_pinhole_camera():
    h, w, f = 48, 64, 55.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    z = np.random.default_rng(0).uniform(1, 3, size=(h, w)).astype(np.float32)
    pts = np.stack([(xs - w // 2) * z / f, (ys - h // 2) * z / f, z], -1)[None]
    np.testing.assert_allclose(np.asarray(runtime.estimate_focal(jnp.asarray(pts))), [f], rtol=1e-4)


def test_bfloat16_compute_keeps_a_float32_carry(tiny_model):
    """The bf16 path (for accelerators): same outputs within bf16 noise, float32 recurrent state."""
    cfg, graphdef, params = tiny_model
    g16, p16 = ckpt.params_into(ckpt.abstract_model(cfg, jnp.bfloat16), nnx.to_pure_dict(params))
    fr = frames(4, reset=[0, 1, 0, 0])
    # flax's LayerNorm mixes bf16 and its float32 statistics implicitly: standard promotion here.
    with jax.numpy_dtype_promotion("standard"):
        _c32, o32 = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 1), fr, StepOptions())
        c16, o16 = runtime.run_sequence(g16, p16, runtime.init_carry(g16, p16, 1), fr, StepOptions())
    assert c16.state.dtype == jnp.float32 and c16.mem.dtype == jnp.float32
    for k in o32:
        assert o16[k].dtype == jnp.float32, k
        assert rel_l2(o16[k], o32[k]) < 0.1, k
    assert rel_l2(o16["pts3d_in_self_view"], o32["pts3d_in_self_view"]) > 1e-5  # really computed in bf16
