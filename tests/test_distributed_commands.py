"""`reconstruct` and `evaluate` over 2 processes (jax.distributed on localhost, 2 forced CPU devices each)
write what 1 process of 4 devices writes: each process runs its share of the inputs or sequences, and for
`evaluate` process 0 writes metrics.json once all are cached. Every process has a deadline and all are killed
when one fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from test_distributed import finish, free_port
from test_evaluate_scene import make_sintel

DEADLINE_S = 240
INPUTS = ("a", "b", "c", "d")


def _launch(args: list[str], devices: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "human3r_jax.cli", *args], env=env, stdout=f, stderr=subprocess.STDOUT
        )


def _run_all(runs: list[tuple[list[str], int]], tmp: Path) -> None:
    """Start every run together; wait until all end (or one fails, or the deadline) and fail with the logs."""
    logs = [tmp / f"run{i}.log" for i in range(len(runs))]
    finish([_launch(args, devices, log) for (args, devices), log in zip(runs, logs)], logs, DEADLINE_S)


def _two_processes(args: list[str]) -> list[tuple[list[str], int]]:
    coordinator = f"127.0.0.1:{free_port()}"
    return [
        ([*args, "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)], 2) for i in range(2)
    ]


def _inputs(tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    for name in INPUTS:
        (tmp / "in" / name).mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            PIL.Image.fromarray(img).save(tmp / "in" / name / f"{i:04d}.png")
    return [str(tmp / "in" / n) for n in INPUTS]


MODEL = ["--random-weights", "--size", "224", "--quiet"]


def test_reconstruct_over_two_processes_writes_the_same_files(tmp_path):
    """4 image folders: 1 process of 4 devices, and 2 processes of 2 (each its 2 inputs), started together."""
    recon = ["reconstruct", *_inputs(tmp_path), *MODEL]
    _run_all(
        [([*recon, "--out", str(tmp_path / "one")], 4), *_two_processes([*recon, "--out", str(tmp_path / "two")])],
        tmp_path,
    )
    for name in INPUTS:
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        frames = sorted(p.name for p in (one / "frames").iterdir())
        assert frames == sorted(p.name for p in (two / "frames").iterdir()) and len(frames) == 2
        for f in [*(Path("frames") / n for n in frames), Path("reconstruction.npz")]:
            with np.load(one / f) as a, np.load(two / f) as b:
                assert a.files == b.files
                for k in a.files:
                    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}/{f}:{k}")
        assert json.loads((two / "meta.json").read_text())["complete"] is True


@pytest.mark.slow
def test_evaluate_over_two_processes_writes_one_metrics_file(tmp_path):
    """Sintel depth (3 sequences): the 2 processes share the sequences, process 0 scores once all are cached."""
    evaluate = ["evaluate", "depth", "--dataset", "sintel", "--root", str(make_sintel(tmp_path / "sintel")), *MODEL]
    one, two = tmp_path / "one", tmp_path / "two"
    _run_all([([*evaluate, "--out", str(one)], 4), *_two_processes([*evaluate, "--out", str(two)])], tmp_path)
    a = json.loads((one / "metrics.json").read_text())["results"]
    b = json.loads((two / "metrics.json").read_text())["results"]
    assert a.keys() == b.keys() == {"depth/sintel"}
    assert a["depth/sintel"]["align"] == b["depth/sintel"]["align"]  # every sequence's metrics, every alignment
    assert len(a["depth/sintel"]["align"]["scale"]["sequences"]) == 3
    assert sorted(p.name for p in (two / "sintel").glob("*.npz")) == sorted(
        p.name for p in (one / "sintel").glob("*.npz")
    )


def test_an_unreachable_coordinator_is_one_line_in_bounded_time(tmp_path):
    port = free_port()  # nobody listens there
    t0 = time.monotonic()
    argv = ["reconstruct", str(tmp_path), "--random-weights", "--out", str(tmp_path / "o")]
    argv += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "human3r_jax.cli", *argv, "--process-timeout", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], proc.stderr
    assert time.monotonic() - t0 < 120
