"""Multi-process training on `jax.distributed` (CPU, gloo collectives): 2 processes of 2 forced host devices
each train as 1 process of 4 devices, a 1-process run resumes from their checkpoint (with its parameters
sharded, fsdp), only process 0 writes, a launch that cannot start ends with one line within a bounded
time, and the trainer reads the TFDS build of the data as the files.

The training runs are subprocesses of this file (`python tests/test_distributed.py ROLE SPEC`), started
together once per session (`shared_runs`) by the first test that needs them, here or in test_fsdp.py: the
1-process run also trains the same steps with fsdp for that module. Every run has a deadline, and all are
killed when one fails. The training is a tiny Human3R on the synthetic dataset with few trainable
parameters (the SMPL-X heads, and the camera head as the fixed group), so that a step compiles in seconds.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TRAINABLE = (r"^human\.(decpose|decshape|decexpression|deccam)\.",)
FIXED = (r"^head\.pose_head\.",)
FROZEN = (r"^(?!human\.(decpose|decshape|decexpression|deccam)\.|head\.pose_head\.)",)
DEADLINE_S = 300  # for the whole set of runs; they take ~80 s on 2 cores
TOL = 1e-6  # absolute, on losses, parameters and optimizer state
FSDP_STEPS = 3


# ---------------------------------------------------------------- the runs (subprocesses)


def train_config(spec: dict, **kw):
    from human3r_jax.train.config import TrainConfig

    base = {
        "model": "human3r_tiny",
        "random_init": True,
        "smplx": spec["smplx"],
        "data_root": spec["data"],
        "trainable_params": TRAINABLE,
        "fixed_params": FIXED,
        "frozen_params": FROZEN,
        "batch_size": 4,
        "num_views": 2,
        "max_humans": 2,
        "resolutions": ((64, 48),),
        "aug_crop": 4,
        "samples_per_epoch": 40,
        "epochs": 2,
        "warmup_epochs": 0.1,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "compute_dtype": "float32",
        "remat": False,
        "save_every": 3,
        "keep": 2,
        "keep_period": None,
        "log_every": 1,
        "prefetch": 1,
        "eval_every": 0,
    }
    return TrainConfig(**{**base, **kw})


def snapshot(trainer, metrics: dict, prefix: str) -> dict:
    """{prefix/loss, prefix/<state leaf path>: numpy}: the full state on every process (a collective)."""
    import jax

    from human3r_jax import distributed

    leaves = jax.tree_util.tree_flatten_with_path(distributed.host_copy(trainer.state))[0]
    out = {f"{prefix}/{jax.tree_util.keystr(path)}": np.asarray(v) for path, v in leaves}
    out[f"{prefix}/loss"] = np.float64(metrics["loss"])
    return out


def device_bytes(trainer) -> dict:
    """Bytes on the first device (the sum of its shards): the parameters (trainable, fixed, frozen) and the
    optimizer state with the carried fixed-group gradients; and how many state arrays are sharded."""
    import jax

    first = jax.devices()[0]

    def on_first(tree) -> int:
        return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards if s.device == first)

    state = trainer.state
    return {
        "params": on_first((state.trainable, trainer.fixed, trainer.frozen)),
        "optimizer": on_first((state.opt_state, state.fixed_grads)),
        "sharded_arrays": sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state)),
    }


def wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.2)


def run_multi(spec: dict) -> None:
    """One of 2 processes: 3 steps through `Trainer.run` (checkpoint at step 3), the state saved by process 0."""
    import jax

    from human3r_jax import distributed
    from human3r_jax.train.trainer import Trainer, TrainError

    launch = distributed.initialize(spec["coordinator"], 2, spec["process_id"], timeout_s=60)
    assert launch and jax.process_count() == 2 and len(jax.devices()) == 4, (launch, jax.devices())
    refusals = {
        3: "batch_size=3 does not split over 2 processes (each builds an equal part of every batch)",
        6: "batch_size=6 does not split over 4 devices",
    }
    for batch_size, message in refusals.items():
        try:
            Trainer(train_config(spec, batch_size=batch_size, workdir=spec["workdir"]), log_to_tensorboard=False)
            raise SystemExit(f"batch {batch_size} was accepted")
        except TrainError as e:
            assert str(e) == message, e
    trainer = Trainer(train_config(spec, max_steps=3, workdir=spec["workdir"]))
    metrics = trainer.run(progress=False)
    out = snapshot(trainer, metrics, "multi3")
    faulthandler.dump_traceback_later(60, exit=True)  # an export that waits for the other process: its stack
    trainer.export(Path(spec["workdir"]) / "exported")  # every process gathers; process 0 writes
    if distributed.is_main():
        np.savez(spec["out"] + ".tmp.npz", **out)
        os.replace(spec["out"] + ".tmp.npz", spec["out"])  # complete when it appears


def run_single(spec: dict) -> None:
    """1 process of 4 devices: 4 straight steps replicated, the first 3 again with fsdp (and its export), then
    a resume from the 2-process checkpoint to step 4 with fsdp (the replicated checkpoint is resharded)."""
    import jax
    from flax import nnx

    from human3r_jax import checkpoint as ckpt
    from human3r_jax.train.trainer import Trainer

    assert jax.process_count() == 1 and len(jax.devices()) == 4
    out, sizes = {}, {}
    for name, fsdp, steps in (("single", False, 4), ("fsdp", True, FSDP_STEPS)):
        trainer = Trainer(train_config(spec, workdir=f"{spec['workdir']}/{name}", fsdp=fsdp), log_to_tensorboard=False)
        sizes[name] = device_bytes(trainer)
        batches = trainer.batches(0)
        for step in range(1, steps + 1):
            metrics = trainer.train_step(next(batches))
            out[f"{name}/loss{step}"] = np.float64(metrics["loss"])
            if step >= FSDP_STEPS:
                out.update(snapshot(trainer, metrics, f"{name}{step}"))
        batches.close()
    _, _, params = ckpt.load(trainer.export(f"{spec['workdir']}/fsdp_export"))  # gathers the shards
    out.update({f"exported/{k}": np.asarray(v) for k, v in ckpt.flatten(nnx.to_pure_dict(params)).items()})
    wait_for(Path(spec["multi_out"]), DEADLINE_S)
    resumed = Trainer(
        train_config(spec, max_steps=4, workdir=spec["multi_workdir"], fsdp=True), log_to_tensorboard=False
    )
    assert resumed.restore_latest() == 3
    out.update(snapshot(resumed, {"loss": np.nan}, "restored3"))
    metrics = resumed.run(progress=False)
    out.update(snapshot(resumed, metrics, "resumed4"))
    np.savez(spec["out"], **out)
    Path(spec["sizes"]).write_text(json.dumps(sizes))


ROLES = {"multi": run_multi, "single": run_single}


# ---------------------------------------------------------------- the test side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(role: str, spec: dict, devices: int, log: Path) -> subprocess.Popen:
    """`python tests/test_distributed.py role spec` on `devices` forced CPU devices, output to `log`."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, __file__, role, json.dumps(spec)], env=env, stdout=f, stderr=subprocess.STDOUT
        )


def finish(procs: list[subprocess.Popen], logs: list[Path], timeout_s: float) -> None:
    """Wait for every process until the deadline; on a failure or at the deadline kill the rest and fail
    with the logs' tails."""
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in procs):
            failed = any(p.poll() not in (None, 0) for p in procs)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode != 0 for p in procs):
        tails = "\n".join(
            f"--- {log.name} (exit {p.returncode})\n{log.read_text()[-2500:]}" for p, log in zip(procs, logs)
        )
        pytest.fail(f"a training process failed or ran past {timeout_s} s:\n{tails}")


def synthetic_data(tmp_path_factory, smplx_root) -> Path:
    """The session's small synthetic BEDLAM-layout dataset for these tests (made once)."""
    from human3r_jax.data.synthetic import make_synthetic_bedlam

    root = tmp_path_factory.getbasetemp() / "distributed_data"
    if not root.exists():
        make_synthetic_bedlam(root.with_suffix(".tmp"), smplx_root, n_train=3, n_test=1, frames=8, max_people=3)
        root.with_suffix(".tmp").rename(root)
    return root


def shared_runs(tmp_path_factory, smplx_root) -> dict:
    """The 2-process run and the 1-process run, once per session (here, or for test_fsdp.py) → their results:
    multi and single (the saved arrays), sizes (device_bytes), logs (the 2 processes' output), folder."""
    pytest.importorskip("tensorflow", reason="the training extra is not installed: pip install -e '.[train]'")
    tmp = tmp_path_factory.getbasetemp() / "distributed_runs"
    multi = {"coordinator": f"127.0.0.1:{free_port()}", "workdir": str(tmp / "multi"), "out": str(tmp / "multi.npz")}
    single = {"workdir": str(tmp / "single"), "multi_workdir": multi["workdir"], "multi_out": multi["out"]}
    single.update(out=str(tmp / "single.npz"), sizes=str(tmp / "sizes.json"))
    logs = [tmp / "process0.log", tmp / "process1.log", tmp / "single.log"]
    if tmp.exists() and not Path(single["sizes"]).exists():
        pytest.fail(f"the training runs failed earlier in this session (logs in {tmp})")
    if not tmp.exists():
        tmp.mkdir()
        common = {"smplx": str(smplx_root), "data": str(synthetic_data(tmp_path_factory, smplx_root))}
        t0 = time.monotonic()
        procs = [start("multi", {**common, **multi, "process_id": i}, 2, logs[i]) for i in (0, 1)]
        procs.append(start("single", {**common, **single}, 4, logs[2]))
        finish(procs, logs, DEADLINE_S)
        print(f"2-process and 1-process runs: {time.monotonic() - t0:.1f} s")
    return {
        "multi": dict(np.load(multi["out"])),
        "single": dict(np.load(single["out"])),
        "sizes": json.loads(Path(single["sizes"]).read_text()),
        "logs": [log.read_text() for log in logs[:2]],
        "folder": tmp,
    }


@pytest.fixture(scope="module")
def runs(smplx_root, tmp_path_factory):
    return shared_runs(tmp_path_factory, smplx_root)


def test_launch_settings_come_together_and_in_range(monkeypatch):
    from human3r_jax.distributed import DistributedError, resolve

    launch = resolve("10.0.0.1:1234", 4, 3)
    assert dataclasses.astuple(launch) == ("10.0.0.1:1234", 4, 3, "options", None)
    env = {"JAX_COORDINATOR_ADDRESS": "[::1]:99", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
    assert resolve(environ=env).describe("coordinator") == "JAX_COORDINATOR_ADDRESS=[::1]:99"
    bad = [
        (("10.0.0.1:1234", 2, None), {}, "^--process-id: not set; a multi-process launch needs --coordinator, "),
        ((None, None, None), {**env, "JAX_PROCESS_ID": ""}, "^JAX_PROCESS_ID: not set"),
        (("10.0.0.1:1234", 2, 2), {}, r"^--process-id=2: must be below --num-processes=2 \(ids 0..1\)$"),
        (("10.0.0.1:1234", 0, 0), {}, "^--num-processes=0: expected an integer at least 1$"),
        ((None, None, None), {**env, "JAX_NUM_PROCESSES": "two"}, "^JAX_NUM_PROCESSES=two: expected an integer"),
        (("10.0.0.1", 2, 0), {}, "^--coordinator=10.0.0.1: expected HOST:PORT"),
        (("host:70000", 2, 0), {}, "^--coordinator=host:70000: expected HOST:PORT"),
    ]
    for args, environ, message in bad:
        with pytest.raises(DistributedError, match=message) as e:
            resolve(*args, environ=environ)
        assert "\n" not in str(e.value)
    # nothing set and no launcher: one process
    monkeypatch.setattr("human3r_jax.distributed.LAUNCHERS", ())
    assert resolve(environ={}) is None
    # a SLURM job step as JAX reads it
    monkeypatch.setattr("human3r_jax.distributed.LAUNCHERS", ("slurm",))
    slurm = {"SLURM_JOB_ID": "4096", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "2"}
    for k, v in {**slurm, "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(k, v)
    launch = resolve(environ={})
    assert dataclasses.astuple(launch) == ("gpu07:61440", 2, 1, "slurm", (0,))  # one device per process


def test_unreachable_coordinator_fails_in_one_line_within_the_timeout():
    from human3r_jax.distributed import DistributedError, initialize

    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    t0 = time.monotonic()
    with pytest.raises(DistributedError) as e:
        initialize(address, 2, 1, timeout_s=1)
    took = time.monotonic() - t0
    message = str(e.value)
    assert message.startswith(f"--coordinator {address}: cannot reach the coordinator within 1 s (")
    assert "process 1 of 2" in message and "\n" not in message and took < 5, (message, took)


def test_missing_process_ends_the_coordinator_in_one_line(tmp_path):
    """Process 0 of 2 alone: JAX's rendezvous waits for the other; the timeout ends it with one line."""
    code = (
        "from human3r_jax.distributed import initialize\n"
        f"initialize('127.0.0.1:{free_port()}', 2, 0, timeout_s=2, prog='human3r-jax train')\n"
        "raise SystemExit('the rendezvous completed alone')\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and took < 30, (done.returncode, took, done.stderr)
    assert lines[-1].startswith("human3r-jax train: error: --coordinator 127.0.0.1:"), done.stderr
    assert lines[-1].endswith(
        "not all 2 processes joined within 2 s (this is process 0); start every process with the same "
        "--coordinator and --num-processes and a distinct --process-id"
    ), done.stderr


def test_trainer_reads_the_tfds_build_as_the_files(smplx_root, tmp_path_factory, tmp_path):
    """data_source="tfds": the trainer's index is the TFDS build in tfds_dir, and its batches are the files'."""
    pytest.importorskip("tensorflow_datasets", reason="the training extra is not installed: pip install -e '.[train]'")
    from human3r_jax.data.bedlam import DataError, pipeline
    from human3r_jax.data.bedlam.tfds import TfdsIndex, build
    from human3r_jax.train import config
    from human3r_jax.train.trainer import Trainer, TrainError

    data = synthetic_data(tmp_path_factory, smplx_root)
    build(data, tmp_path / "tfds")
    spec = {"smplx": str(smplx_root), "data": str(data)}
    got = {}
    for source, tfds_dir in (("files", None), ("tfds", str(tmp_path / "tfds"))):
        trainer = object.__new__(Trainer)  # the data side only: no model
        trainer.cfg = train_config(spec, data_source=source, tfds_dir=tfds_dir, workdir=str(tmp_path / "w"))
        trainer.index = trainer.data_index("Training")
        batches = trainer.batches(0)
        got[source] = next(batches)
        batches.close()
    assert isinstance(trainer.index, TfdsIndex)
    assert config.DATA_SOURCES == pipeline.DATA_SOURCES
    assert got["files"].keys() == got["tfds"].keys()
    for k, v in got["files"].items():
        np.testing.assert_array_equal(got["tfds"][k], v, err_msg=k)
    trainer.cfg = train_config(spec, data_source="tfds", workdir=str(tmp_path / "w"))
    with pytest.raises(
        TrainError, match=r"^set tfds_dir: the TFDS data_dir of the BEDLAM build \(data_source='tfds'\)$"
    ):
        trainer.data_index("Training")
    trainer.cfg = train_config(spec, data_source="tfds", tfds_dir=str(data), workdir=str(tmp_path / "w"))
    with pytest.raises(DataError, match="no prepared bedlam_tfds dataset"):
        trainer.data_index("Training")  # the files' layout is not a TFDS build


def compare(a: dict, b: dict, prefix_a: str, prefix_b: str) -> int:
    """Every entry of a under prefix_a equals b's under prefix_b to TOL. → how many were compared."""
    keys = sorted(k.split("/", 1)[1] for k in a if k.startswith(prefix_a + "/"))
    assert keys == sorted(k.split("/", 1)[1] for k in b if k.startswith(prefix_b + "/"))
    for k in keys:
        x, y = a[f"{prefix_a}/{k}"], b[f"{prefix_b}/{k}"]
        assert x.shape == y.shape and x.dtype == y.dtype, k
        np.testing.assert_allclose(x, y, rtol=0, atol=TOL, err_msg=k)
    return len(keys)


def test_two_processes_train_as_one_process_of_four_devices(runs):
    multi, single = runs["multi"], runs["single"]
    n = compare(multi, single, "multi3", "single3")
    assert n > 10 and any("opt_state" in k for k in multi) and any("fixed_grads" in k for k in multi)
    # the steps move the state: the comparison is not of values that stay as they were
    trainable = [k.split("/", 1)[1] for k in single if k.startswith("single3/.trainable")]
    assert trainable and all(not np.array_equal(single[f"single3/{k}"], single[f"single4/{k}"]) for k in trainable)


def test_one_process_resumes_from_the_two_process_checkpoint_sharded(runs):
    multi, single, tmp = runs["multi"], runs["single"], runs["folder"]
    for k in (k for k in multi if k != "multi3/loss"):
        np.testing.assert_array_equal(single[k.replace("multi3/", "restored3/", 1)], multi[k], err_msg=k)
    compare(single, single, "single4", "resumed4")
    assert (tmp / "multi" / "checkpoints" / "3").is_dir() and (tmp / "multi" / "checkpoints" / "4").is_dir()


def test_only_process_zero_writes_logs_and_exports(runs):
    tmp, (log0, log1) = runs["folder"], runs["logs"]
    assert re.search(r"^step 3/\d+  loss", log0, re.M) and not re.search(r"step \d+/", log1), (log0, log1)
    assert (tmp / "multi" / "exported" / "config.json").exists()
    assert len(list((tmp / "multi" / "logs").glob("events.out.tfevents.*"))) == 1


if __name__ == "__main__":
    faulthandler.dump_traceback_later(DEADLINE_S - 20, exit=True)  # a run that hangs shows where, then ends
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
