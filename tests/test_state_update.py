"""Pluggable state-update rules (`StepOptions.state_update`): the built-in rules reproduce the former
boolean path and the official fixtures, custom rules run through the step, the scan and reconstruct,
and the cross-attention logits are computed only for rules that read them."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY_DINO, assert_trees_close, rel_l2, shared_path
from flax import nnx
from test_model import frames, step_by_step

from human3r_jax import checkpoint as ckpt
from human3r_jax import runtime
from human3r_jax.models import state_update as su
from human3r_jax.models.cut3r import Carry, Frame, StepOptions
from human3r_jax.reconstruct import Settings, load_model, reconstruct

sys.path.insert(0, str(ROOT / "examples"))
from constant_beta import SAMPLE, ConstantBeta, scan


def _blend(new, old, m):
    m = m.astype(new.dtype).reshape(m.shape + (1,) * (new.ndim - m.ndim))
    return new * m + old * (1 - m)


def former_update(carry, frame, new_state, new_mem, gate, ttt3r, taps):
    """`Cut3r.update` as it was with the boolean `StepOptions.ttt3r`, verbatim (the reference)."""
    m = frame.update
    m_state = m.astype(jnp.float32)
    if ttt3r:
        first = (carry.t == 0) | carry.after_reset
        beta = jax.nn.sigmoid(gate)
        m_state = jnp.where(first[:, None], m_state[:, None], m_state[:, None] * beta)
        taps.update(ttt3r_beta=jnp.where(first[:, None], 1.0, beta), ttt3r_gate_applied=~first)
    state = _blend(new_state, carry.state, m_state)
    mem = _blend(new_mem, carry.mem, m.astype(jnp.float32))
    state = _blend(carry.state_init, state, frame.reset)
    mem = _blend(carry.mem_init, mem, frame.reset)
    return carry._replace(state=state, mem=mem, t=carry.t + 1, after_reset=frame.reset)


@pytest.mark.parametrize("ttt3r", [False, True])
def test_builtin_rules_equal_the_former_boolean_update(tiny_model, ttt3r):
    """Every combination of update flag, reset, t == 0 and after_reset, to the bit."""
    _, graphdef, params = tiny_model
    model = nnx.merge(graphdef, params)
    rng = np.random.default_rng(0)
    b, s, d, m = 8, 12, 32, 8
    f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    flags = np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).astype(bool)  # [3, 8]
    carry = Carry(
        f32(b, s, d),
        f32(b, m, 2 * d),
        f32(b, s, d),
        f32(b, m, 2 * d),
        jnp.asarray(np.where(flags[0], 0, 5), jnp.int32),
        jnp.asarray(flags[1]),
    )
    frame = Frame(None, jnp.asarray(flags[2]), jnp.asarray(rng.uniform(size=b) < 0.3))
    new_state, new_mem, logits = f32(b, s, d), f32(b, m, 2 * d), f32(b, s)
    ref_taps, taps = {}, {}
    ref = former_update(carry, frame, new_state, new_mem, logits, ttt3r, ref_taps)
    opts = StepOptions(state_update=su.ttt3r if ttt3r else su.cut3r)
    got = model.update(carry, frame, new_state, new_mem, logits if ttt3r else None, opts, taps)
    jax.tree.map(np.testing.assert_array_equal, got, ref)
    for k, v in ref_taps.items():
        np.testing.assert_array_equal(taps[k], v)
    assert set(ref_taps) == ({"ttt3r_beta", "ttt3r_gate_applied"} if ttt3r else set())


def _fixture_run(name, rule, **kw):
    from human3r_jax.converters.convert import convert_file

    root = shared_path("fixtures", name)
    cfg, params, _ = convert_file(root / "checkpoint.pth", TINY_DINO if name == "human3r_tiny" else None)
    graphdef, state = ckpt.params_into(ckpt.abstract_model(cfg), params)
    inputs = dict(np.load(root / "inputs.npz"))
    v = len(inputs["img"])
    views = Frame(
        jnp.asarray(inputs["img"].transpose(0, 2, 3, 1)[:, None]),
        jnp.asarray(inputs["update"]).reshape(v, 1),
        jnp.asarray(inputs["reset"]).reshape(v, 1),
    )
    opts = StepOptions(state_update=rule, taps=True, **kw)
    _, out = runtime.run_sequence(graphdef, state, runtime.init_carry(graphdef, state, 1), views, opts)
    return jax.tree.map(lambda a: np.asarray(a)[:, 0], out["taps"]), dict(np.load(root / "intermediates.npz"))


def test_ttt3r_rule_on_the_official_fixture():
    """human3r_tiny (official --use_ttt3r, reset_interval 3): gates, skipped gates and states."""
    taps, ref = _fixture_run("human3r_tiny", su.ttt3r)
    np.testing.assert_array_equal(taps["ttt3r_gate_applied"], ref["ttt3r_gate_applied"])
    for k in ("ttt3r_beta", "state_candidate", "state_out"):
        assert rel_l2(taps[k], ref[k]) < 2e-5, k
    np.testing.assert_array_equal(taps["state_update_weight"], taps["ttt3r_beta"])


def test_cut3r_rule_on_the_official_fixture():
    taps, ref = _fixture_run("cut3r_tiny", su.cut3r, pose_token_after_reset=False)
    assert "ttt3r_beta" not in taps
    for k in ("state_candidate", "state_out", "mem_out"):
        assert rel_l2(taps[k], ref[k]) < 2e-5, k


@su.needs_logits
def gated_running_mean(ctx):
    """w = σ(logits)/(t + 1), 1 on a segment's first frame: reads every field of the context."""
    assert ctx.logits.shape == ctx.state.shape[:2] and ctx.logits.dtype == jnp.float32
    w = jax.nn.sigmoid(ctx.logits) / (ctx.t[:, None].astype(jnp.float32) + 1)
    return jnp.where(ctx.first[:, None], 1.0, w)


@su.needs_logits
def ttt3r_copy(ctx):
    return jnp.where(ctx.first[:, None], 1.0, jax.nn.sigmoid(ctx.logits))


def no_logits(ctx):
    assert ctx.logits is None  # traced: the decoder did not compute them
    return jnp.full(ctx.state.shape[:2], 0.25, jnp.float32)


def test_scan_equals_step_by_step_with_a_custom_rule(tiny_model):
    _, graphdef, params = tiny_model
    fr = frames(5, update=[1, 0, 1, 1, 1], reset=[0, 1, 0, 0, 0])
    opts = StepOptions(state_update=gated_running_mean, taps=True)
    c1, o1 = step_by_step(graphdef, params, fr, opts)
    c2, o2 = runtime.run_sequence(graphdef, params, runtime.init_carry(graphdef, params, 1), fr, opts)
    assert_trees_close(c1, c2, rtol=1e-5, atol=1e-6)
    assert_trees_close(o1, o2, rtol=1e-5, atol=1e-6)
    t = jax.tree.map(np.asarray, o2["taps"])
    w = t["state_update_weight"]
    np.testing.assert_array_equal(w[[0, 2]], 1.0)  # t == 0, and right after the reset
    assert np.all((w[[3, 4]] > 0) & (w[[3, 4]] < 1 / 3))  # σ(·)/(t+1) with t = 3, 4
    np.testing.assert_array_equal(t["state_out"][1], t["state_in"][0])  # frame 1 resets to the initial state
    s_in, cand, s_out = t["state_in"][3], t["state_candidate"][3], t["state_out"][3]
    np.testing.assert_allclose(s_out, w[3][..., None] * cand + (1 - w[3][..., None]) * s_in, rtol=1e-5, atol=1e-6)


def test_logits_only_for_rules_that_read_them(tiny_model):
    _, graphdef, params = tiny_model
    fr = frames(3)
    run = lambda rule: runtime.run_sequence(
        graphdef, params, runtime.init_carry(graphdef, params, 1), fr, StepOptions(state_update=rule, taps=True)
    )
    c_copy, _ = run(ttt3r_copy)
    c_ttt3r, _ = run(su.ttt3r)
    np.testing.assert_array_equal(c_copy.state, c_ttt3r.state)  # it got TTT3R's logits
    _, o = run(no_logits)  # asserts ctx.logits is None while tracing
    np.testing.assert_array_equal(np.asarray(o["taps"]["state_update_weight"]), 0.25)
    model = nnx.merge(graphdef, params)
    carry = runtime.init_carry(graphdef, params, 1)
    logits = lambda rule: jax.eval_shape(
        lambda: model.decode(carry, *model.encode(fr.img[0]), (48, 64), StepOptions(state_update=rule))[3]
    )
    assert logits(no_logits) is None and logits(ttt3r_copy).shape == (1, 12)


@pytest.fixture(scope="module")
def tiny_human3r():
    return load_model(random_weights="human3r_tiny")


@pytest.mark.slow  # ~31 s; the example rule also runs through reconstruct in the default suite
def test_example_rule_through_the_scan(tiny_human3r):
    """β = 0 keeps the initial state, β = 1 is the cut3r rule, β = ½ halves the way to the candidate."""
    init = np.asarray(runtime.init_carry(tiny_human3r.graphdef, tiny_human3r.params, 1).state)
    c0, _ = scan(tiny_human3r, ConstantBeta(0.0), frames=2)
    np.testing.assert_array_equal(c0.state, init)
    c1, _ = scan(tiny_human3r, ConstantBeta(1.0), frames=2)
    c_cut3r, _ = scan(tiny_human3r, su.cut3r, frames=2)
    np.testing.assert_array_equal(c1.state, c_cut3r.state)
    _, o = scan(tiny_human3r, ConstantBeta(0.5), frames=2)
    t = jax.tree.map(np.asarray, o["taps"])
    np.testing.assert_allclose(t["state_out"], 0.5 * t["state_candidate"] + 0.5 * t["state_in"], rtol=1e-6, atol=1e-6)


def test_example_rule_through_reconstruct(tmp_path, tiny_human3r):
    """reconstruct with Settings(state_update=rule) ≡ the scan with that rule, and ≠ the default rule."""
    rule = ConstantBeta(0.0)
    out = reconstruct(
        [SAMPLE], tmp_path / "o", tiny_human3r, Settings(max_frames=2, state_update=rule), progress=False
    )[0]
    with np.load(out / "frames" / "000001.npz") as f:
        depth = f["depth"]
    _, o = scan(tiny_human3r, rule, frames=2)
    _, o_cut3r = scan(tiny_human3r, su.cut3r, frames=2)
    np.testing.assert_allclose(depth, np.asarray(o["pts3d_in_self_view"])[1, 0, ..., 2], rtol=1e-4, atol=1e-5)
    assert not np.allclose(depth, np.asarray(o_cut3r["pts3d_in_self_view"])[1, 0, ..., 2], rtol=1e-3)
