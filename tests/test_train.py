"""Training end to end on the synthetic BEDLAM-layout dataset with a tiny Human3R (CPU).

One compiled train step serves every test here: Trainers that differ only in run settings
(workdir, seed, max_steps, …) share it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("tensorflow", reason="the training extra is not installed: pip install -e '.[train]'")

from conftest import ROOT, shared_path, write_multihmr

from human3r_jax import checkpoint as ckpt
from human3r_jax.cli import main
from human3r_jax.converters.convert import convert_file, convert_multihmr_file
from human3r_jax.data.synthetic import make_synthetic_bedlam
from human3r_jax.train import optim
from human3r_jax.train.config import ConfigError, TrainConfig
from human3r_jax.train.trainer import Trainer, TrainError


@pytest.fixture(scope="module")
def synth(tmp_path_factory, smplx_root):
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_bedlam(root, smplx_root, n_train=3, n_test=1, frames=8, size=(96, 64), max_people=3, seed=0)
    return root


def tiny(synth, smplx_root, workdir, **kw) -> TrainConfig:
    base = {
        "model": "human3r_tiny",
        "random_init": True,
        "smplx": str(smplx_root),
        "data_root": str(synth),
        "batch_size": 2,
        "max_humans": 4,
        "resolutions": ((64, 48),),
        "aug_crop": 4,
        "samples_per_epoch": 60,
        "epochs": 2,
        "warmup_epochs": 0.1,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "compute_dtype": "float32",
        "remat": False,
        "save_every": 1000,
        "keep": 2,
        "keep_period": None,
        "log_every": 1000,
        "workdir": str(workdir),
        "prefetch": 1,
        "eval_every": 0,
    }
    base.update(kw)
    return TrainConfig(**base)


def flat_params(trainer: Trainer) -> dict:
    return {
        **ckpt.flatten(jax.device_get(trainer.state.trainable)),
        **jax.device_get(trainer.fixed),
        **jax.device_get(trainer.frozen),
    }


@pytest.mark.slow  # ~110 s: 30 steps; the resume, CLI and data-parallel tests train in the default suite
def test_loss_decreases_and_only_trainable_parameters_change(synth, smplx_root, tmp_path):
    trainer = Trainer(tiny(synth, smplx_root, tmp_path / "run"), log_to_tensorboard=False)
    initial = {k: np.array(v) for k, v in flat_params(trainer).items()}
    batches = trainer.batches(0)
    losses = [float(trainer.train_step(next(batches))["loss"]) for _ in range(30)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    # through the real export/load path
    _, _, params = ckpt.load(trainer.export(tmp_path / "export"))
    final = ckpt.flatten(nnx.to_pure_dict(params))
    assert set(final) == set(initial)
    trainable, fixed, frozen = optim.split_params(initial)
    for k in {**fixed, **frozen}:
        assert np.array_equal(final[k], initial[k]), f"{k} changed"
    for k in trainable:
        assert not np.array_equal(final[k], initial[k]), f"{k} did not change"


def test_resume_equals_straight_run(synth, smplx_root, tmp_path):
    straight = Trainer(tiny(synth, smplx_root, tmp_path / "straight", max_steps=6), log_to_tensorboard=False)
    straight.run(progress=False)
    first = Trainer(tiny(synth, smplx_root, tmp_path / "resumed", max_steps=3, save_every=3), log_to_tensorboard=False)
    first.run(progress=False)
    assert first.manager.latest_step() == 3
    second = Trainer(tiny(synth, smplx_root, tmp_path / "resumed", max_steps=6, save_every=3), log_to_tensorboard=False)
    assert second.restore_latest() == 3
    second.run(progress=False)
    assert int(second.state.step) == int(straight.state.step) == 6
    a, b = flat_params(straight), flat_params(second)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    # the optimizer moments and the carried gradients of the fixed group (the official clip norm's)
    state_a = jax.tree.leaves((straight.state.opt_state, straight.state.fixed_grads))
    state_b = jax.tree.leaves((second.state.opt_state, second.state.fixed_grads))
    assert len(state_a) == len(state_b) and any(
        np.any(np.asarray(x)) for x in jax.tree.leaves(second.state.fixed_grads)
    )
    for x, y in zip(state_a, state_b):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)


def test_resume_refuses_another_seed_or_initialisation(synth, smplx_root, tmp_path):
    Trainer(tiny(synth, smplx_root, tmp_path / "w", max_steps=1, save_every=1), log_to_tensorboard=False).run(
        progress=False
    )
    with pytest.raises(TrainError, match="seed 0, not 1"):
        Trainer(tiny(synth, smplx_root, tmp_path / "w", seed=1, max_steps=2), log_to_tensorboard=False).run(
            progress=False
        )


def test_train_command_logs_checkpoints_and_exports(synth, smplx_root, tmp_path, capsys):
    work = tmp_path / "cli"
    cfg = tiny(
        synth,
        smplx_root,
        work,
        max_steps=4,
        save_every=2,
        log_every=2,
        eval_every=2,
        eval_samples=4,
        eval_resolution=(64, 48),
    )
    sets = []
    for f in dataclasses.fields(TrainConfig):
        v = getattr(cfg, f.name)
        if v != getattr(TrainConfig, f.name):
            sets += ["--set", f"{f.name}={v}"]
    assert main(["train", "--config", "tiny_synthetic", "--quiet", *sets]) == 0
    out = capsys.readouterr()
    assert "step 4/" in out.err + out.out and "trained weights ->" in out.out
    assert sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert list((work / "logs").glob("events.out.tfevents.*"))
    meta = json.loads((work / "checkpoints" / "4" / "meta" / "metadata").read_text())
    assert meta["step"] == 4 and meta["seed"] == 0
    assert (work / "export" / "step_4" / "config.json").exists()
    # evaluations before step 0, at step 2 and at the end; the best one exported
    evals = re.findall(r"eval at step (\d+): loss median ([\d.]+)", out.err + out.out)
    assert [int(s) for s, _ in evals] == [0, 2, 4]
    assert meta["best_eval"] == pytest.approx(min(float(v) for _, v in evals), abs=1e-4)
    best = json.loads((work / "export" / "best" / "config.json").read_text())
    assert best["source"]["trained_steps"] == next(
        int(s) for s, v in evals if float(v) == min(float(v) for _, v in evals)
    )
    # resumed to step 6: no second evaluation of step 4, and the best so far carried in the checkpoint
    assert main(["train", "--config", "tiny_synthetic", "--quiet", *sets, "--set", "max_steps=6"]) == 0
    out = capsys.readouterr()
    more = re.findall(r"eval at step (\d+): loss median ([\d.]+)", out.err + out.out)
    assert [int(s) for s, _ in more] == [6]
    meta = json.loads((work / "checkpoints" / "6" / "meta" / "metadata").read_text())
    assert meta["best_eval"] == pytest.approx(min(float(v) for _, v in evals + more), abs=1e-4)


def test_official_initialisation_from_cut3r_and_multihmr_files(synth, smplx_root, tmp_path):
    """init_cut3r (an official .pth, converted on the fly) + init_multihmr: every CUT3R tensor and
    the prior's backbone and detector come from the files, the new modules keep their seeded
    initialisation, and a resume with another initialisation is refused."""
    cut3r = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    write_multihmr(tmp_path / "multiHMR.pt")
    cfg = tiny(
        synth,
        smplx_root,
        tmp_path / "w",
        random_init=False,
        init_cut3r=str(cut3r),
        init_multihmr=str(tmp_path / "multiHMR.pt"),
    )
    trainer = Trainer(cfg, log_to_tensorboard=False)
    got = flat_params(trainer)
    from_cut3r = ckpt.flatten(convert_file(cut3r)[1])
    from_mhmr = ckpt.flatten(convert_multihmr_file(tmp_path / "multiHMR.pt", trainer.hcfg))
    seeded = ckpt.flatten(ckpt.random_params(ckpt.abstract_model(trainer.hcfg), cfg.seed))
    assert len(from_cut3r) > 100 and any(k.startswith("backbone.") for k in from_mhmr)
    for k in got:
        want = from_cut3r.get(k, from_mhmr.get(k, seeded[k]))
        np.testing.assert_array_equal(got[k], want, err_msg=k)
    rest = set(got) - set(from_cut3r) - set(from_mhmr)
    assert {"human.mlp_fuse.fc1.kernel", "human.decpose.fc1.kernel", "mhmr_masked_smpl_token"} <= rest
    decoder_key = min(k for k in from_cut3r if k.startswith("decoder."))
    assert not np.array_equal(got[decoder_key], seeded[decoder_key])  # the files did replace the seeded init
    assert trainer.save(force=True)
    trainer.manager.wait_until_finished()
    with pytest.raises(TrainError, match="saved from a different initialisation"):
        Trainer(tiny(synth, smplx_root, tmp_path / "w"), log_to_tensorboard=False).restore_latest()


def test_bad_inputs_give_clear_errors(synth, smplx_root, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                "tiny_synthetic",
                "--set",
                f"smplx={smplx_root}",
                "--set",
                f"data_root={tmp_path / 'nowhere'}",
                "--set",
                f"workdir={tmp_path / 'w'}",
            ]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="fixed_grads='often': must be one of accumulate, fresh, ignore"):
        Trainer(tiny(synth, smplx_root, tmp_path / "w4", fixed_grads="often"), log_to_tensorboard=False)
    with pytest.raises(TrainError, match="set smplx"):
        Trainer(tiny(synth, smplx_root, tmp_path / "w2", smplx=None), log_to_tensorboard=False)
    diverged = Trainer(tiny(synth, smplx_root, tmp_path / "w5", max_steps=3, save_every=1), log_to_tensorboard=False)
    batches = diverged.batches(0)
    batch = next(batches)
    batches.close()
    with pytest.raises(TrainError, match=r"batch lacks \['valid'\]"):
        diverged.train_step({k: v for k, v in batch.items() if k != "valid"})
    # the step's own check (chex, at trace time): a key of the wrong shape, named with what was expected
    with pytest.raises(AssertionError, match=r"batch\['K'\] must be float32 \[2, 4, 3, 3\]"):
        diverged.train_step({**batch, "K": batch["K"][..., :2]})
    diverged.train_step = lambda batch: {"loss": np.float32("nan")}
    with pytest.raises(TrainError, match="step 0: the loss is nan"):
        diverged.run(progress=False)
    assert diverged.manager.latest_step() is None  # nothing saved from a diverged step
    with pytest.raises(TrainError, match="init_cut3r and init_multihmr"):
        Trainer(tiny(synth, smplx_root, tmp_path / "w3", random_init=False), log_to_tensorboard=False)


DP_SCRIPT = """
import chex
chex.set_n_cpu_devices(2)  # before any JAX operation: the CPU backend reads its device count when it starts
import json, sys
import numpy as np, jax
sys.path.insert(0, {tests!r})
from test_train import tiny, flat_params
from human3r_jax.train.trainer import Trainer, TrainError
from pathlib import Path
try:
    Trainer(tiny(Path({synth!r}), Path({smplx!r}), Path({work!r}), batch_size=3), log_to_tensorboard=False)
    raise SystemExit("batch 3 over 2 devices was accepted")
except TrainError as e:
    assert "batch_size=3 does not split over 2 devices" in str(e), e
cfg = tiny(Path({synth!r}), Path({smplx!r}), Path({work!r}), data_parallel=True, max_steps=2)
t = Trainer(cfg, log_to_tensorboard=False)
assert len(t.mesh.devices.flat) == 2, t.mesh
m = t.run(progress=False)
np.savez({out!r}, loss=m["loss"], grad_norm=m["grad_norm"], **{{k: np.asarray(v) for k, v in flat_params(t).items()}})
"""


@pytest.fixture(scope="module", autouse=True)
def data_parallel_run(request, synth, smplx_root, tmp_path_factory):
    """Starts the 2-device run in a subprocess as soon as the module starts (when its test is
    selected), so that its compilation overlaps the other tests'."""
    if not any(item.name == "test_data_parallel_over_two_host_devices_matches_one" for item in request.session.items):
        yield None
        return
    tmp = tmp_path_factory.mktemp("dp")
    script = DP_SCRIPT.format(
        tests=str(ROOT / "tests"),
        synth=str(synth),
        smplx=str(smplx_root),
        work=str(tmp / "work"),
        out=str(tmp / "dp.npz"),
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # the script fakes its 2 CPU devices with chex
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    yield proc, tmp / "dp.npz"
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_data_parallel_over_two_host_devices_matches_one(data_parallel_run, synth, smplx_root, tmp_path):
    """The same two steps sharded over 2 forced CPU devices (batch split) and on one device."""
    proc, out = data_parallel_run
    single = Trainer(
        tiny(synth, smplx_root, tmp_path / "one", data_parallel=False, max_steps=2), log_to_tensorboard=False
    )
    init = {k: np.array(v) for k, v in flat_params(single).items()}
    m = single.run(progress=False)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    dp = dict(np.load(out))
    # the second step's loss and gradient norm: the same sums in another order
    assert float(dp["loss"]) == pytest.approx(m["loss"], rel=1e-5)
    assert float(dp["grad_norm"]) == pytest.approx(m["grad_norm"], rel=1e-5)
    # the updates, leaf by leaf (relative L2): Adam divides each gradient element by its own size,
    # so summation-order noise on near-zero elements moves single elements by up to ~1e-4 (of
    # updates ~lr = 3e-4); whole leaves agree to ~1e-4, a real difference would be O(1)
    for k, v in flat_params(single).items():
        d1, d2 = v - init[k], dp[k] - init[k]
        if not d1.any():
            assert not d2.any(), f"{k} changed only in the data-parallel run"
            continue
        assert np.linalg.norm(d2 - d1) / np.linalg.norm(d1) < 1e-2, k


@pytest.mark.slow
def test_bfloat16_with_remat_trains(synth, smplx_root, tmp_path):
    """The official precision setting (bf16 compute, float32 parameters, heads and losses) with
    rematerialisation: finite, close to float32 on the first step, and decreasing."""
    f32 = Trainer(tiny(synth, smplx_root, tmp_path / "f32"), log_to_tensorboard=False)
    bf16 = Trainer(
        tiny(synth, smplx_root, tmp_path / "bf16", compute_dtype="bfloat16", remat=True), log_to_tensorboard=False
    )
    batch = next(f32.batches(0))
    l32 = float(f32.train_step(batch)["loss"])
    # flax's LayerNorm mixes bf16 inputs with its float32 statistics implicitly: standard promotion here
    with jax.numpy_dtype_promotion("standard"):
        l16 = float(bf16.train_step(batch)["loss"])
        batches = bf16.batches(1)
        losses = [l16] + [float(bf16.train_step(next(batches))["loss"]) for _ in range(15)]
    assert l16 == pytest.approx(l32, rel=5e-2)
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses
