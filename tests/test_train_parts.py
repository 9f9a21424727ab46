"""Targets, parameter groups, schedule, clipping and config overrides of the training code."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import shared_path

from human3r_jax import checkpoint as ckpt
from human3r_jax.config import preset
from human3r_jax.geometry import rotvec_to_rotmat
from human3r_jax.train import init, optim
from human3r_jax.train.config import FIXED, FROZEN, TRAINABLE, ConfigError, TrainConfig, apply_overrides, load_config
from human3r_jax.train.targets import depth_to_points, keep_first_per_cell, scene_targets, square_intrinsics


def test_rotvec_to_rotmat_matches_smplx_batch_rodrigues():
    torch = pytest.importorskip("torch")
    from smplx.lbs import batch_rodrigues

    v = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    v[0] = 0.0
    v[1] = [1e-7, 0, 0]
    want = batch_rodrigues(torch.from_numpy(v)).numpy()
    np.testing.assert_allclose(np.asarray(rotvec_to_rotmat(jnp.asarray(v))), want, atol=2e-6)


def test_depth_to_points_and_square_intrinsics_hand_cases():
    K = jnp.asarray([[100.0, 0, 2], [0, 50, 1], [0, 0, 1]])
    depth = jnp.full((2, 3), 4.0)
    p = depth_to_points(depth, K)
    np.testing.assert_allclose(np.asarray(p[1, 0]), [(0 - 2) * 4 / 100, (1 - 1) * 4 / 50, 4])
    np.testing.assert_allclose(np.asarray(p[0, 2]), [0.0, -4 / 50, 4])
    # 512×288 into 896: focal ÷ (512/896); principal point × 896/W and × 896/H
    K = jnp.asarray([[400.0, 0, 256], [0, 400, 144], [0, 0, 1]])
    Ks = np.asarray(square_intrinsics(K, 288, 512, 896))
    np.testing.assert_allclose(Ks, [[700, 0, 448], [0, 700, 448], [0, 0, 1]], rtol=1e-6)


def test_scene_targets_relative_cameras():
    b, v, h, w = 1, 2, 2, 2
    c2w = np.tile(np.eye(4, dtype=np.float32), (b, v, 1, 1))
    c2w[0, 0, :3, 3] = [1, 2, 3]
    c2w[0, 1, :3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90° about z
    c2w[0, 1, :3, 3] = [1, 2, 5]
    batch = {"depth": jnp.ones((b, v, h, w)), "K": jnp.broadcast_to(jnp.eye(3), (b, v, 3, 3)), "c2w": jnp.asarray(c2w)}
    t = scene_targets(batch)
    np.testing.assert_allclose(np.asarray(t["pose_t"][0]), [[0, 0, 0], [0, 0, 2]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(t["pose_q"][0, 0]), [1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(t["pose_q"][0, 1]), [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], atol=1e-6
    )
    # a view-1 point at pixel (0, 0), depth 1: camera (0, 0, 1) → view 0's frame: R·p + t = (0, 0, 3)
    np.testing.assert_allclose(np.asarray(t["pts_cross"][0, 1, 0, 0]), [0, 0, 3], atol=1e-6)
    np.testing.assert_allclose(np.asarray(t["pts_self"]), np.asarray(depth_to_points(batch["depth"], batch["K"])))


def test_head_cells_first_slot_wins_and_out_of_grid_drops():
    cells = jnp.asarray([[5, 5, 7, 5, 9]])
    in_grid = jnp.asarray([[True, True, True, True, False]])
    assert np.asarray(keep_first_per_cell(cells, in_grid)).tolist() == [[True, False, True, False, False]]
    # a slot outside the grid does not claim its cell
    cells = jnp.asarray([[3, 3]])
    assert np.asarray(keep_first_per_cell(cells, jnp.asarray([[False, True]]))).tolist() == [[False, True]]


# ---------------------------------------------------------------- parameter groups


def _spec_count(fname: str, pattern: str) -> int:
    total = 0
    for line in shared_path("spec", fname).read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, _, kind = line.split("\t")
        if kind.startswith(("alias", "buffer")) or not re.match(pattern, key):
            continue
        total += math.prod(eval(shape, {}))  # a tuple literal from the spec table
    return total


def test_groups_match_the_official_freeze():
    """Trainable = the spec's 67,681,561 (§4.8) less `masked_smpl_token` (1,024), which the official
    optimizer lists but never changes (used only detached: no gradient, so AdamW skips it); fixed =
    the official `_is_frozen` modules."""
    shapes = ckpt.param_shapes(ckpt.abstract_model(preset("human3r_896L")))
    trainable, fixed, frozen = optim.split_params(shapes)
    count = lambda d: sum(math.prod(s) for s in d.values())
    assert count(trainable) == 67_681_561 - 1024
    assert count(trainable) == _spec_count(
        "human3r_state_dict_shapes.txt",
        r"^(downstream_head\.(mlp_fuse|decpose|decshape|decexpression|deccam|mlp_msk)\.|mhmr_masked_smpl_token$)",
    )
    assert "masked_smpl_token" in frozen and "mhmr_masked_smpl_token" in trainable
    fixed_spec = _spec_count(
        "human3r_state_dict_shapes.txt",
        r"^(dec_blocks\.|dec_blocks_state\.|pose_retriever\.|pose_token$|register_tokens\.|"
        r"decoder_embed\.|decoder_embed_state\.|dec_norm\.|dec_norm_state\.|"
        r"downstream_head\.(dpt_self|final_transform|dpt_cross|dpt_rgb|pose_head)\.)",
    )
    assert count(fixed) == fixed_spec
    assert not any(k.startswith(("encoder.", "ray_encoder.", "backbone.")) for k in {**trainable, **fixed})
    assert {"human.mlp_classif.fc1.kernel", "human.mlp_offset.fc1.kernel", "human.init_body_pose"} <= set(frozen)


# optim.py's groups before they moved into the config: two lists, every other parameter frozen
FORMER_TRAINABLE = (
    r"^human\.(mlp_fuse|decpose|decshape|decexpression|deccam|mlp_msk)\.",
    r"^mhmr_masked_smpl_token$",
)
FORMER_FIXED = (
    r"^decoder\.",
    r"^state_embed\.",
    r"^pose_token$",
    r"^register_tokens$",
    r"^pose_retriever\.",
    r"^head\.(dpt_self|dpt_cross|dpt_rgb|final_transform|pose_head)\.",
)


def former_split(paths) -> tuple[set, set, set]:
    groups = (set(), set(), set())
    for k in paths:
        in_t, in_f = (any(re.search(p, k) for p in ps) for ps in (FORMER_TRAINABLE, FORMER_FIXED))
        groups[0 if in_t else 1 if in_f else 2].add(k)
    return groups


@pytest.fixture(scope="module")
def tiny_shapes():
    return ckpt.param_shapes(ckpt.abstract_model(preset("human3r_tiny")))


@pytest.mark.parametrize("model", ["human3r_896L", "human3r_tiny"])
def test_default_groups_reproduce_the_former_split(model):
    shapes = ckpt.param_shapes(ckpt.abstract_model(preset(model)))
    assert tuple(set(g) for g in optim.split_params(shapes)) == former_split(shapes)
    # the bundled configs state the same groups as the defaults
    for name in ("human3r_bedlam", "tiny_synthetic"):
        cfg = load_config(name)
        assert (cfg.trainable_params, cfg.fixed_params, cfg.frozen_params) == (TRAINABLE, FIXED, FROZEN)


def test_misspelled_pattern_is_refused(tiny_shapes):
    with pytest.raises(
        ConfigError,
        match=re.escape("trainable_params: pattern '^mhmr_masked_smpl_tokn$' matches no parameter of the model"),
    ):
        optim.split_params(tiny_shapes, (TRAINABLE[0], r"^mhmr_masked_smpl_tokn$"), FIXED, FROZEN)
    with pytest.raises(ConfigError, match=re.escape("frozen_params: pattern '^Backbone\\.' matches no parameter")):
        optim.split_params(tiny_shapes, TRAINABLE, FIXED, (*FROZEN[:2], r"^Backbone\.", *FROZEN[3:]))
    with pytest.raises(ConfigError, match="fixed_params=.*not a tuple of regular expressions"):
        optim.split_params(tiny_shapes, TRAINABLE, (*FIXED, "^decoder["), FROZEN)
    with pytest.raises(ConfigError, match=r"frozen_params='\^encoder': not a tuple .*one string"):
        optim.split_params(tiny_shapes, TRAINABLE, FIXED, "^encoder")


def test_uncovered_or_renamed_parameter_is_refused(tiny_shapes):
    """A parameter in no group stops the split (it is not frozen silently), whether a group lost its
    pattern or the model renamed the parameter."""
    without_backbone = tuple(p for p in FROZEN if p != r"^backbone\.")
    with pytest.raises(ConfigError, match=r"parameter\(s\) in no group: backbone\.\S+, .* and \d+ more; add a pattern"):
        optim.split_params(tiny_shapes, TRAINABLE, FIXED, without_backbone)
    renamed = {k.replace("human.decpose.fc1.", "human.dec_pose.fc1."): v for k, v in tiny_shapes.items()}
    with pytest.raises(ConfigError, match=r"in no group: human\.dec_pose\.fc1\.bias, human\.dec_pose\.fc1\.kernel;"):
        optim.split_params(renamed)


def test_parameter_in_two_groups_is_refused(tiny_shapes):
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "parameter human.decpose.fc1.bias is matched by trainable_params ('^human\\.(mlp_fuse|decpose|decshape|"
            "decexpression|deccam|mlp_msk)\\.') and frozen_params ('^human\\.decpose\\.'): each parameter belongs "
            "to exactly one group"
        ),
    ):
        optim.split_params(tiny_shapes, TRAINABLE, FIXED, (*FROZEN, r"^human\.decpose\."))
    # patterns of one group may overlap
    both = optim.split_params(tiny_shapes, (*TRAINABLE, r"^human\.decpose\.fc1\."), FIXED, FROZEN)
    assert tuple(map(set, both)) == tuple(map(set, optim.split_params(tiny_shapes)))


def test_groups_are_checked_before_any_weights_load(monkeypatch):
    def no_weights(*args):
        raise AssertionError("weights loaded before the groups were checked")

    monkeypatch.setattr(init, "load_weights", no_weights)
    cfg = dataclasses.replace(load_config("tiny_synthetic"), frozen_params=FROZEN[1:])
    with pytest.raises(ConfigError, match=r"in no group: encoder\."):
        init.init_params(cfg, init.model_config(cfg))


def test_trainer_names_the_batch_without_the_data_pipeline():
    """train/ takes the batch's keys, resolutions and splits from data/schema.py; the BEDLAM pipeline
    (PIL, TensorFlow) is imported only when a run reads data."""
    code = (
        "import sys, human3r_jax.train.trainer; from human3r_jax.data.schema import STEP_KEYS, batch_spec; "
        "assert 'human3r_jax.data.bedlam' not in sys.modules; "
        "assert set(batch_spec(1, 2)) - set(STEP_KEYS) == {'frame_ids', 'seq_index', 'step'}"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_decay_mask_matrices_only():
    shapes = {"a.kernel": np.zeros((3, 4)), "a.bias": np.zeros(4), "tok": np.zeros((1, 8)), "scale": np.zeros(8)}
    assert ckpt.flatten(optim.decay_mask(shapes)) == {"a.kernel": True, "a.bias": False, "tok": True, "scale": False}


def test_schedule_warmup_then_cosine():
    s = optim.schedule(1e-4, 1e-6, warmup_steps=10, total_steps=110)
    s = jax.numpy_dtype_promotion("standard")(s)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(5e-5)
    assert float(s(10)) == pytest.approx(1e-4)
    assert float(s(60)) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5, rel=1e-5)
    assert float(s(110)) == pytest.approx(1e-6, rel=1e-4)


def test_clip_like_torch():
    g = {"a": jnp.asarray([3.0, 4.0])}
    n = optim.global_norm(g)
    assert float(n) == pytest.approx(5.0)
    np.testing.assert_allclose(
        np.asarray(optim.clip_by_global_norm(g, n, 1.0)["a"]), [3 / 5.000001, 4 / 5.000001], rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(optim.clip_by_global_norm(g, n, 10.0)["a"]), [3.0, 4.0])


def test_adamw_decays_a_zero_gradient_token():
    """mhmr_masked_smpl_token's gradient is exactly zero (it fills empty slots, whose losses are
    masked) but not None, so torch's AdamW decays it: so does ours."""
    params = {"tok": jnp.ones((1, 4)), "b": jnp.ones(4)}
    tx = optim.make_optimizer(params, lr=1e-2, min_lr=1e-3, warmup_steps=0, total_steps=10)
    state = tx.init(params)
    zeros = {"tok": jnp.zeros((1, 4)), "b": jnp.zeros(4)}
    with jax.numpy_dtype_promotion("standard"):  # optax's own arithmetic is not strict-clean
        upd, _ = tx.update(zeros, state, params)
    new = optax.apply_updates(params, upd)
    np.testing.assert_allclose(np.asarray(new["tok"]), 1 - 1e-2 * 0.05, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["b"]), 1.0)


def test_clip_gradients_accumulates_the_fixed_group_like_the_original():
    """Two steps by hand: g_train = (0, 4), g_fixed = (3, 0) each step, max_norm 1."""
    gt, gf = {"t": jnp.asarray([0.0, 4.0])}, {"f": jnp.asarray([3.0, 0.0])}
    zero = {"f": jnp.zeros(2)}
    # step 1: norm 5; the carried fixed gradient becomes (3, 0)·c1
    t1, carried, n1 = optim.clip_gradients(gt, gf, zero, "accumulate", 1.0)
    c1 = 1 / (5 + 1e-6)
    assert float(n1) == pytest.approx(5.0)
    np.testing.assert_allclose(np.asarray(carried["f"]), [3 * c1, 0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(t1["t"]), [0, 4 * c1], rtol=1e-6)
    # step 2: the fixed gradient is (3 + 3·c1, 0), so the norm is larger than a fresh step's 5
    t2, carried, n2 = optim.clip_gradients(gt, gf, carried, "accumulate", 1.0)
    n2_hand = math.hypot(3 + 3 * c1, 4)
    assert float(n2) == pytest.approx(n2_hand, rel=1e-6)
    np.testing.assert_allclose(np.asarray(carried["f"]), [(3 + 3 * c1) / (n2_hand + 1e-6), 0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(t2["t"]), [0, 4 / (n2_hand + 1e-6)], rtol=1e-6)
    # "fresh": this step's fixed gradient only, nothing carried; "ignore": trainable only
    t, carried_f, n = optim.clip_gradients(gt, gf, {}, "fresh", 1.0)
    assert float(n) == pytest.approx(5.0) and carried_f == {}
    t, _, n = optim.clip_gradients(gt, None, {}, "ignore", 1.0)
    assert float(n) == pytest.approx(4.0)
    np.testing.assert_allclose(np.asarray(t["t"]), [0, 4 / (4 + 1e-6)], rtol=1e-6)


# ---------------------------------------------------------------- configs


def test_bundled_configs_load_and_state_the_recipe():
    cfg = load_config("human3r_bedlam")
    assert (cfg.batch_size, cfg.epochs, cfg.steps_per_epoch, cfg.total_steps, cfg.warmup_steps) == (
        8,
        40,
        500,
        20000,
        2500,
    )
    assert (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.b1, cfg.b2, cfg.clip_norm) == (1e-4, 1e-6, 0.05, 0.9, 0.95, 1.0)
    assert len(cfg.resolutions) == 10 and cfg.compute_dtype == "bfloat16"
    assert isinstance(load_config("tiny_synthetic"), TrainConfig)


def test_overrides_parse_types_and_reject_bad_keys():
    cfg = apply_overrides(
        TrainConfig(),
        [
            "lr=2e-4",
            "batch_size=4",
            "data_root=/data/x",
            "remat=False",
            "resolutions=[(64, 48)]",
            "max_steps=None",
            "warmup_epochs=1",
        ],
    )
    assert (cfg.lr, cfg.batch_size, cfg.data_root, cfg.remat, cfg.resolutions, cfg.max_steps, cfg.warmup_epochs) == (
        2e-4,
        4,
        "/data/x",
        False,
        ((64, 48),),
        None,
        1.0,
    )
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        apply_overrides(TrainConfig(), ["lrr=1"])
    with pytest.raises(ConfigError, match="batch_size=four: expected int"):
        apply_overrides(TrainConfig(), ["batch_size=four"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(TrainConfig(), ["lr"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("no_such_config")
